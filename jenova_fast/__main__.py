from jenova_fast.cli import entry

entry()
