"""Serving: how a distilled model answers ranking traffic. ``sglang`` builds the launch
arguments of an SGLang replica and its router and checks them with SGLang's own parser;
``k8s`` renders the Kubernetes fleet (workers, Service, router, RBAC, disruption budget)
as plain dicts; the local engine, its HTTP server, the client and the load benchmark live
beside them. The package imports nothing heavy itself, so rendering manifests never pays
for torch or SGLang.
"""
