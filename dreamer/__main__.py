from dreamer.train import cli

cli()
