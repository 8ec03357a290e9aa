from compound.cli.main import run

run()
