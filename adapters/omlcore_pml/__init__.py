"""omlcore's pytorch-metric-learning (PML) adapter: PML losses and miners as omlcore components.

Its plugin, :mod:`omlcore_pml.plugin` (entry point ``pml``), registers every PML loss and miner as
``pml.<ClassName>`` without importing PML; they need ``pip install "omlcore[pml]"``. PML losses already fit
:class:`omlcore.protocols.Loss`; PML miners are wrapped by :class:`omlcore_pml.miners.PMLMiner` so that they
return :class:`~omlcore.protocols.Triplets` / :class:`~omlcore.protocols.Pairs`.
"""

__all__: list[str] = []
