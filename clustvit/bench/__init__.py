"""The efficiency tools behind ``clustvit bench ...`` (``clustvit/cli/bench.py`` parses the arguments).

Shared: ``common`` (models, inputs, the timed forward pass, token and FLOP counts), ``timing`` (the one
timing loop), ``report`` (the one table renderer), ``memory`` (peak memory), ``flops`` (FLOP counting).
One module per subcommand: ``fps``, ``gflops`` (flops), ``tokens``, ``compare``, ``official`` (+ the
standalone ``official_worker.py`` it runs under the official environment), ``backends``, ``kernels``,
``stages`` (profile), ``suite_report`` (report), ``plot``, ``tables``, ``device_run`` (device; with
``device_check``, ``device_report``, ``device_setup``).
"""
