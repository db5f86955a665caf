"""Example Lambda functions, installed as ``athena_warm.examples`` (the demo runs them too).

- ``counter``: an execution counter (a module global survives invocations).
- ``customer_lookup``: a customer -> account lookup through the middleware and get_mapping().
"""
