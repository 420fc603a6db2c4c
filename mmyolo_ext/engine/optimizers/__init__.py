from .nominal_batch_optim_constructor import (NominalBatchOptimConstructor,
                                              split_param_groups)
from .summed_accumulation_optim_wrapper import (
    AmpSummedAccumulationOptimWrapper, SummedAccumulationOptimWrapper,
    autocast_is_native)

__all__ = [
    'AmpSummedAccumulationOptimWrapper', 'NominalBatchOptimConstructor',
    'SummedAccumulationOptimWrapper', 'autocast_is_native',
    'split_param_groups'
]
