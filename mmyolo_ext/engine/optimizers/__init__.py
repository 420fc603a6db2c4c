from .nominal_batch_optim_constructor import (NominalBatchOptimConstructor,
                                              split_param_groups)
from .summed_accumulation_optim_wrapper import (
    AmpSummedAccumulationOptimWrapper, SummedAccumulationOptimWrapper)

__all__ = [
    'AmpSummedAccumulationOptimWrapper', 'NominalBatchOptimConstructor',
    'SummedAccumulationOptimWrapper', 'split_param_groups'
]
