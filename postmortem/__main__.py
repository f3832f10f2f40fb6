from postmortem.cli import entry

entry()
