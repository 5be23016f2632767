"""adamtune's output on a terminal whose encoding is not UTF-8: real processes, as a user's
terminal runs them (``PYTHONIOENCODING`` sets what Python writes, as a Latin-1 locale does)."""

import os
import subprocess

import pytest

from adamtune.report.plain import spell


@pytest.mark.parametrize("char, text", [("·", "*"), ("→", "->"), ("≈", "~"), ("—", "-"), ("★", "*"), ("λ", "lambda"),
                                        ("β", "beta"), ("Δ", "Delta"), ("²", "2"), ("ᵢ", "i"), ("３", "3"), ("\u0302", ""),
                                        # a name's letters: told apart from another name's (nlé is not nle)
                                        ("é", "\\xe9"), ("名", "\\u540d")])
def test_each_character_is_spelt_in_ascii(char, text):
    assert spell(char) == text


@pytest.fixture
def run(tmp_path, adamtune_command):
    def run(encoding, *args):
        env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120", PYTHONIOENCODING=encoding)
        r = subprocess.run([adamtune_command, *args], capture_output=True, env=env, cwd=tmp_path, timeout=600)
        assert b"Traceback" not in r.stderr and b"UnicodeEncodeError" not in r.stderr, r.stderr.decode(errors="replace")
        return r.returncode, r.stdout.decode(encoding), r.stderr.decode(encoding)
    return run


def test_an_ascii_terminal_gets_every_command_in_ascii_not_a_traceback(run, tmp_path, tiny_ref):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    rc, out, err = run("ascii", "tune", "--workload", tiny_ref, "--budget", "3", "--storage", db, "--pruner", "none",
                       "--no-report")
    assert rc == 0, err
    assert "study tiny * workload" in out and "tuning lr - budget 3" in out and "3 trials: 3 complete" in out
    assert "optimizer = torch.optim.AdamW(" in out
    rc, out, err = run("ascii", "show", "--storage", db)
    assert rc == 0 and "study tiny * workload" in out and "| trial |" in out, err
    rc, out, err = run("ascii", "explain", "weight_decay")
    assert rc == 0 and "1/(lr*lambda)" in out and "theta <- theta*(1 - lr*lambda)" in out.replace("\n", " "), err
    rc, out, err = run("ascii", "show", "--storage", db, "--study", "nöne")  # an error line, on standard error
    assert rc == 2 and out == "" and err.strip() == "adamtune: error: no study 'n\\xf6ne' in this storage; it holds: tiny"


def test_a_latin1_terminal_gets_what_latin1_has_and_ascii_for_the_rest(run, tmp_path, tiny_ref):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    rc, out, err = run("latin-1", "tune", "--workload", tiny_ref, "--budget", "2", "--storage", db, "--no-report")
    assert rc == 0, err
    assert "study tiny · workload" in out and "tuning lr - budget 2" in out  # · is Latin-1's, — is not
    rc, out, err = run("latin-1", "studies", "--storage", db)
    assert rc == 0 and "tiny" in out, err
