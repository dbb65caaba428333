"""jupyter_kernel_test's conformance suite, with every sample and option it offers."""

import jupyter_kernel_test

from conftest import KERNEL_NAME


class GKernelConformance(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('oops', file=sys.stderr)"
    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "import itert", "matches": {"itertools"}},
    ]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "print?"
    code_generate_error = "raise ValueError('deliberate')"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},  # matched by code_history_pattern
        {"code": "[n * n for n in range(4)]", "result": "[0, 1, 4, 9]"},
        {"code": "12", "result": "12"},
        {"code": "import fractions; fractions.Fraction(1, 2)", "result": "Fraction(1, 2)"},
    ]
    code_display_data = [
        {"code": "display({'text/html': '<b>x</b>', 'text/plain': 'x'}, raw=True)", "mime": "text/html"},
        {"code": "class M:\n    def _repr_markdown_(self): return '*m*'\ndisplay(M())", "mime": "text/markdown"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output\nclear_output()"


class GKernelIopubWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = KERNEL_NAME
    support_iopub_welcome = True
