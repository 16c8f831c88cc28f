from smpc_synth.cli import main

raise SystemExit(main())
