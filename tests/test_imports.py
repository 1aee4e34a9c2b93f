import subprocess
import sys


def test_core_imports_no_plotting_or_papermill():
    code = (
        "import sys, attn_lib; "
        "loaded = {m.split('.')[0] for m in sys.modules}; "
        "print(sorted(loaded & {'matplotlib', 'seaborn', 'papermill'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
