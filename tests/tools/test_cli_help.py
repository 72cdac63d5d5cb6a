"""Every command of the one console script has help text and `--help` works for each; hall-IT options are documented too."""
import click
from click.testing import CliRunner

from pingjia.tools import fleet_cli
from pingjia.tools.cli import main


def _walk(cmd, path=()):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _walk(sub, path + (name,))


def test_every_command_has_help():
    missing = [" ".join(p) or "pingjia" for p, c in _walk(main) if not (c.help or "").strip()]
    assert not missing, "commands without help text: %s" % missing
    ours = {c.name for c in (fleet_cli.flash_cmd, fleet_cli.flash_all_cmd, fleet_cli.update_cmd, fleet_cli.fleet_cmd,
                             fleet_cli.simulate_cmd, fleet_cli.vboard_cmd)}
    undocumented = [
        "%s %s" % (" ".join(p), o.name)
        for p, c in _walk(main) if p and p[0] in ours for o in c.params
        if isinstance(o, click.Option) and not (o.help or "").strip() and o.name not in ("help", "version")
    ]
    assert not undocumented, "options without help text: %s" % undocumented


def test_help_runs_for_every_command():
    runner = CliRunner()
    for path, _ in _walk(main):
        r = runner.invoke(main, list(path) + ["--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "Usage:" in r.output
