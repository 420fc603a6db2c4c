"""Our YOLOv7 models against the official layer graphs of the manifests:
the same raw head outputs for every architecture (the wiring, inputs,
concatenation and branch orders that parameter counts cannot see)."""
import pytest
import torch

from helpers.official_models import (ARCH_CFGS, build_model, eval_with_aux,
                                     load_converted, load_manifest,
                                     random_official_state_dict,
                                     run_manifest_graph)

# input side per arch: small, a multiple of the largest stride
GRAPH_INPUT = dict(tiny=64, l=64, x=64, w6=128, e6=128, d6=128, e6e=128)


@pytest.mark.parametrize('kind', ['training', 'deploy'])
@pytest.mark.parametrize('arch', list(ARCH_CFGS))
def test_model_matches_official_graph(arch, kind):
    torch.manual_seed(0)
    manifest = load_manifest(arch, kind)
    official = random_official_state_dict(manifest, seed=1)
    model = build_model(arch, device='meta')
    missing = load_converted(model, official)
    aux = manifest['detect_type'] == 'IAuxDetect'
    if kind == 'deploy' and model.neck.with_aux:
        # a P6 deploy checkpoint has no auxiliary head
        assert missing and all('aux_convs' in key for key in missing)
        model.neck.remove_aux()
        model.bbox_head.head_module.remove_aux()
    else:
        assert missing == []
    side = GRAPH_INPUT[arch]
    inputs = torch.rand(2, 3, side, side, generator=torch.Generator().
                        manual_seed(2))
    with torch.no_grad():
        expected = run_manifest_graph(manifest, official, inputs)
        if aux:
            eval_with_aux(model)
        else:
            model.eval()
        ours = model(inputs, mode='tensor')
    assert len(ours) == len(expected) == manifest['nl'] * (2 if aux else 1)
    for level, (a, b) in enumerate(zip(ours, expected)):
        assert a.shape == b.shape, level
        assert b.std() > 0.1  # the outputs carry signal
        torch.testing.assert_close(
            a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()),
            msg=f'{arch} {kind} output {level}')
