from lipt_cli.app import main

main()
