import os

import pytest

from aios_core.errors import AccessDeniedError
from aios_core.managers.sandbox_paths import SandboxPathError, is_under, normalize_path, resolve_in


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "a/..", "/etc/passwd", "C:/x", "c:x", "a\\b", "~/x", "a\x00b", "a\nb", "", ".", "x" * 2000],
)
def test_escaping_or_malformed_paths_are_refused(path):
    with pytest.raises(SandboxPathError) as info:
        normalize_path(path)
    assert isinstance(info.value, AccessDeniedError)  # an escape attempt is a security refusal (HTTP 403)


def test_paths_are_normalised_not_rewritten():
    assert normalize_path("a//b/./c/") == "a/b/c"
    assert normalize_path("notes/..hidden") == "notes/..hidden"  # '..' only as a whole component is refused
    assert normalize_path("", allow_empty=True) == ""


def test_is_under_respects_folder_boundaries():
    assert is_under("notes/a", "notes")
    assert not is_under("notesx/a", "notes")
    assert is_under("anything", "")


def test_resolve_in_refuses_symlinks_that_leave_the_root(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, root / "link.txt")
    os.symlink(tmp_path, root / "up")
    (root / "inside.txt").write_text("ok")
    os.symlink(root / "inside.txt", root / "good-link.txt")

    with pytest.raises(SandboxPathError):
        resolve_in(root, "link.txt")
    with pytest.raises(SandboxPathError):
        resolve_in(root, "up/secret.txt")
    assert resolve_in(root, "good-link.txt") == (root / "inside.txt").resolve()
    assert resolve_in(root, "new/file.txt") == (root / "new" / "file.txt").resolve()
