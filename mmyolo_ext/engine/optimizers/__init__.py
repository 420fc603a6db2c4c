from .nominal_batch_optim_constructor import (NominalBatchOptimConstructor,
                                              split_param_groups)
from .summed_accumulation_optim_wrapper import SummedAccumulationOptimWrapper

__all__ = [
    'NominalBatchOptimConstructor', 'SummedAccumulationOptimWrapper',
    'split_param_groups'
]
