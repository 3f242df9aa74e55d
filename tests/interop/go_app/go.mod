module fwatchdog/interop/go_app

go 1.19
