from dreamer.train import main

main()
