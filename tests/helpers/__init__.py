"""What tests share: builders, fixtures and runners. A test imports from here, never from
another test file (a test module is collected, and its tier marked, on its own).

    cli.py                 run the real `oniray` CLI in a subprocess (system tier)
    rollouts.py            a small in-process RolloutWorker
    fragments.py           synthetic fragments that follow the fragment contract
    captions.py            captions with a known answer; guard_captions.py: the guard's
    tiny_lm.py             a tiny causal LM written to disk (transformers, vLLM)
    vllm_server.py         a real vLLM server from .venv-vllm
    prometheus_fixture.py  a real Prometheus (pytest plugin, see tests/conftest.py)
    dashboard_queries.py   the Grafana dashboards' PromQL
"""
