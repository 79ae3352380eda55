"""The product fetches no URL on anyone's behalf, so there is nothing to forge a request through (SSRF).

Checked on the source: no product module imports an HTTP or socket client, and every Hugging Face
`from_pretrained` call passes `local_files_only=True` (models come from local folders only). The one
exception, peft's adapter load, is given a directory that `check_adapter_dir` has already found on disk,
under HF_HUB_OFFLINE=1 (set by modelserver.inference). A new outbound fetch must be added here on purpose,
with its SSRF tests.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETWORK = {"requests", "httpx", "aiohttp", "urllib3", "urllib.request", "http.client", "socket", "ftplib",
           "smtplib", "pycurl", "huggingface_hub"}
# module -> the network modules it may import, and why
ALLOWED_IMPORTS = {
    "evalapp/settings/base.py": {"socket"},  # gethostname() only: names this server in archives
    # SMTPException only, to retry on it; the SMTP server is the site's setting, never a user's input.
    "evalapp/mail.py": {"smtplib"},
    # The LLM judge's OpenAI-compatible endpoint: only base URLs on the site's allow-list, redirects never
    # followed (tests/modelserver/test_judging.py test_http_allow_list, test_http_redirects_are_refused).
    "modelserver/judging/http.py": {"urllib.request"},
}
ALLOWED_REMOTE_LOADS = {("modelserver/inference/loading.py", "from_pretrained", "PeftModel")}


def product_modules():
    for package in ("evalapp", "raters", "modelserver"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def test_no_product_module_imports_a_network_client():
    found = []
    for name, tree in product_modules():
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                hit = next((n for n in NETWORK if module == n or module.startswith(n + ".")), None)
                if hit and hit not in ALLOWED_IMPORTS.get(name, set()):
                    found.append(f"{name}:{node.lineno} imports {module}")
    assert found == []


def test_every_model_load_is_local_only():
    found = []
    for name, tree in product_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                owner = getattr(node.func.value, "id", "")
                local = any(k.arg == "local_files_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                if not local and (name, "from_pretrained", owner) not in ALLOWED_REMOTE_LOADS:
                    found.append(f"{name}:{node.lineno} {owner}.from_pretrained without local_files_only=True")
    assert found == []
