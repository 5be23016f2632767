"""The adamtune command lines printed for the user: quoted for a shell, no password."""

import shlex

from adamtune.commands import command_line


def test_words_in_order_and_quoted_so_a_shell_gives_them_back():
    line = command_line("tune", "--workload", "my model.py:make", storage="sqlite:////tmp/a b.db", study="it's",
                        then=["--set", "lr=1e-4:1e-2"])
    assert shlex.split(line) == ["adamtune", "tune", "--workload", "my model.py:make", "--storage",
                                 "sqlite:////tmp/a b.db", "--study", "it's", "--set", "lr=1e-4:1e-2"]


def test_the_default_storage_is_not_named_and_a_password_never_shown():
    assert command_line("show", study="s") == "adamtune show --study s"
    line = command_line("show", storage="postgresql://me:secret@db.example/studies", study="s")
    assert "secret" not in line and shlex.split(line)[3] == "postgresql://me:***@db.example/studies"
