"""userloop's user simulators inside other evaluation frameworks (each needs its own optional extra).

:mod:`userloop.integrations.inspect`: a simulated user for inspect_ai multi-turn evaluations
(``pip install 'userloop[inspect]'``). Nothing here is imported by ``import userloop``.
"""
