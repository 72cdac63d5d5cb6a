"""pingjia: the one console script. A thin click group; commands live beside their library code.

Each module in COMMAND_MODULES exposes `register(group)` which adds its
commands; keeping the list here makes `pingjia --help` show everything.
"""
import importlib

import click

COMMAND_MODULES = [
    "pingjia.bridge.cli",      # run, status, devices, cases, bind, ...
    "pingjia.bridge.sync_cli",  # sync, quarantine, re-push, followup, report
    "pingjia.tools.fleet_cli",  # flash, update, fleet, simulate, vboard
    "pingjia.tools.demo",       # demo: the README's first command
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pingjia")
def main():
    """pingjia: 评价器 rating keypads, the hall bridge, and hall-IT tools."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(main)


if __name__ == "__main__":
    main()
