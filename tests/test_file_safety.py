"""Where symbp reads and writes: ``-o`` never replaces what it must not (a device, a
FIFO, a read-only file, the spec itself), writes through a symbolic link, and writes a
set of files all-or-nothing even when interrupted; a spec is read only from a regular
file of bounded size. Each refusal is one line, exit 2, nothing written."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from symbp import output
from symbp.cli import main
from symbp.errors import SpecError

SPEC = """name = "quadratic"
[model]
inputs = ["x"]
targets = ["y"]
output = "w1*x**2 + w2*x + b"
loss = "(yhat - y)**2"
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "quadratic.toml"
    path.write_text(SPEC, encoding="utf-8")
    return path


def error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.err.strip()


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_derive_refuses_to_overwrite_its_spec(spec, capsys):
    assert main(["derive", str(spec), "-o", str(spec)]) == 2
    assert error_line(capsys) == f"{spec}: is the spec being read: not overwriting it"
    assert spec.read_text(encoding="utf-8") == SPEC


def test_generate_refuses_to_overwrite_its_spec_through_a_link(spec, tmp_path, capsys):
    link = tmp_path / "m.py"
    link.symlink_to(spec)
    assert main(["generate", str(spec), "-o", str(link)]) == 2
    assert "is the spec being read" in error_line(capsys)
    assert spec.read_text(encoding="utf-8") == SPEC


def test_a_fifo_is_not_replaced(spec, tmp_path, capsys):
    fifo = tmp_path / "out.md"
    os.mkfifo(fifo)
    assert main(["derive", str(spec), "-o", str(fifo)]) == 2
    assert error_line(capsys) == f"{fifo}: is a FIFO, not a regular file: not replacing it"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert listing(tmp_path) == ["out.md", "quadratic.toml"]


def test_a_device_is_not_replaced(spec, capsys):
    before = os.lstat("/dev/null")
    assert main(["derive", str(spec), "-o", "/dev/null"]) == 2
    assert (
        error_line(capsys)
        == "/dev/null: is a character device, not a regular file: not replacing it"
    )
    after = os.lstat("/dev/null")
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


def test_a_read_only_file_is_not_replaced(spec, tmp_path, capsys):
    target = tmp_path / "out.md"
    target.write_text("mine\n", encoding="utf-8")
    target.chmod(0o444)
    assert main(["derive", str(spec), "-o", str(target)]) == 2
    assert error_line(capsys) == f"{target}: is read-only: not replacing it"
    assert target.read_text(encoding="utf-8") == "mine\n"


def test_a_symbolic_link_is_written_through(spec, tmp_path, capsys):
    real = tmp_path / "real.md"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    assert main(["derive", str(spec), "--format", "markdown", "-o", str(link)]) == 0
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8").startswith("# Backpropagation")
    assert listing(tmp_path) == ["link.md", "quadratic.toml", "real.md"]


def test_an_existing_files_mode_is_kept(spec, tmp_path, capsys):
    target = tmp_path / "m.py"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o750)
    assert main(["generate", str(spec), "-o", str(target)]) == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o750


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: p.write_text("x", encoding="utf-8"), "exists and is not a folder"),
        (lambda p: None, None),
    ],
    ids=["a-file", "missing"],
)
def test_run_output_folder(spec, tmp_path, capsys, make, problem, monkeypatch):
    folder = tmp_path / "out"
    make(folder)
    if problem is None:  # the folder is made, but run's training is not what this tests
        monkeypatch.setattr(
            "symbp.check.load_module", lambda *a: (_ for _ in ()).throw(SystemExit(0))
        )
        with pytest.raises(SystemExit):
            main(["run", str(spec), "-o", str(folder)])
        assert listing(folder) == ["quadratic.md", "quadratic.py", "test_quadratic.py"]
        return
    assert main(["run", str(spec), "-o", str(folder)]) == 2
    assert error_line(capsys) == f"{folder}: {problem}"


def test_run_below_a_file_and_in_a_read_only_folder(spec, tmp_path, capsys):
    afile = tmp_path / "f"
    afile.write_text("x", encoding="utf-8")
    assert main(["run", str(spec), "-o", str(afile / "sub")]) == 2
    assert error_line(capsys) == f"{afile / 'sub'}: cannot create: {afile} is not a folder"
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        assert main(["run", str(spec), "-o", str(locked)]) == 2
        assert "output folder is not writable" in error_line(capsys)


def test_regenerate_into_a_file(tmp_path, capsys):
    afile = tmp_path / "f"
    afile.write_text("x", encoding="utf-8")
    assert main(["regenerate", str(afile)]) == 2
    assert error_line(capsys) == f"{afile}: is not a folder"
    assert main(["regenerate", "--check", str(afile)]) == 2


def test_check_seed_must_be_non_negative(capsys):
    assert main(["check", "quadratic", "--seed", "-1"]) == 2
    assert error_line(capsys) == "quadratic: --seed: must be an integer in [0, 2**32)"


def test_a_fifo_spec_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    assert main(["derive", str(fifo)]) == 2
    assert error_line(capsys) == f"{fifo}: is not a regular file (a device, FIFO or socket)"


def test_an_endless_spec_is_refused(capsys):
    assert main(["derive", "/dev/zero"]) == 2
    assert error_line(capsys) == "/dev/zero: is not a regular file (a device, FIFO or socket)"


def test_a_huge_spec_is_refused(tmp_path, capsys):
    big = tmp_path / "big.toml"
    with open(big, "wb") as handle:
        handle.truncate(output_limit := 17 * 2**20)
    assert main(["derive", str(big)]) == 2
    assert f"is {output_limit:,} bytes; a spec may be at most" in error_line(capsys)


def test_a_byte_order_mark_is_accepted(tmp_path, capsys):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + SPEC.encode())
    assert main(["check", str(path)]) == 0


def test_a_set_is_written_all_or_nothing_when_one_replace_fails(tmp_path, monkeypatch):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("old a\n", encoding="utf-8")
    b.write_text("old b\n", encoding="utf-8")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", failing_replace)
    with pytest.raises(SpecError, match="cannot write: No space left on device"):
        output.write_set({a: "new a\n", b: "new b\n"})
    monkeypatch.setattr(output.os, "replace", real_replace)
    assert (a.read_text(), b.read_text()) == ("old a\n", "old b\n")
    assert listing(tmp_path) == ["a.py", "b.py"]


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from symbp import output
    folder = Path(sys.argv[1])
    real = os.replace
    def slow(src, dst):  # a window between the renames for the signal to land in
        real(src, dst)
        print("renamed", flush=True)
        time.sleep(0.3)
    output.os.replace = slow
    output.write_set({folder / f"{n}.py": f"new {n}\\n" for n in "abc"})
    print("done", flush=True)
    """
)


def test_an_interrupt_between_renames_leaves_the_whole_set_new(tmp_path):
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text(f"old {name[0]}\n", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "renamed\n"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    contents = {p.read_text(encoding="utf-8") for p in tmp_path.glob("*.py")}
    assert contents == {"new a\n", "new b\n", "new c\n"}
    assert listing(tmp_path) == ["a.py", "b.py", "c.py"]


def test_leftovers_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    (tmp_path / f".m.py.symbp-{pid}-abc.tmp").write_text("partial", encoding="utf-8")
    (tmp_path / f".m.py.symbp-{pid}-def.bak").write_text("old", encoding="utf-8")
    output.write_set({tmp_path / "m.py": "new\n"})
    assert listing(tmp_path) == ["m.py"]


def test_the_same_file_twice_in_one_set_is_refused(tmp_path):
    (tmp_path / "alias.py").symlink_to(tmp_path / "a.py")
    with pytest.raises(SpecError, match="written twice in one command"):
        output.write_set({tmp_path / "a.py": "1", tmp_path / "alias.py": "2"})
    assert listing(tmp_path) == ["alias.py"]
