"""What a Sort-of-CLEVR `film` checkpoint does with the asked object, per question subtype.

    python tools/sort_of_clevr_probe.py CHECKPOINT [--data-seed N]

On the test set of the run (or one generated afresh with ``--data-seed``), for each subtype
(shape, horizontal, vertical, closest, furthest, count) it prints:

- ``accuracy``;
- ``colour spread``: how much the pooled question vector varies with the asked colour within
  that subtype's template (the variance of its six per-colour means, summed over the vector's
  features), relative to the same figure for the shape questions (1 for them). Near zero, the
  question encoder has dropped the colour from that template, and nothing after it can know which
  object is asked about;
- with an ``AnchorRelations`` stage: the anchor's softmax weight on the cell of the map it reads
  (5 x 5 by default) that holds the asked object's centre (``weight at X``; uniform is 1 / cells)
  and how often that cell has the largest weight (``argmax at X``).

Why: the runs that stayed on the count plateau (count questions answered from the number of
squares alone) all had a colour share near zero for the count questions only (README, Sort-of-CLEVR).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mmfast.data import collate, load_dataset, sort_of_clevr
from mmfast.train.build import build_model
from mmfast.train.checkpoint import MODEL_KEYS, checkpoint_config, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-seed", type=int, default=None, help="a test set generated with this seed")
    args = parser.parse_args()
    state = load_checkpoint(args.checkpoint, required=MODEL_KEYS)
    config = checkpoint_config(state, args.checkpoint)
    if config.dataset != "sort-of-clevr" or config.fusion != "film":
        raise SystemExit(
            f"{args.checkpoint}: expected a sort-of-clevr film run, got {config.dataset} {config.fusion}"
        )
    model = build_model(config)
    if not any(key.startswith("encoders.text.bag_of_words.") for key in state["model"]):
        model.encoders["text"].bag_of_words = None  # a run from before the text_bag_of_words setting
    model.load_state_dict(state["model"])
    model.eval()
    seed = config.seed if args.data_seed is None else args.data_seed
    dataset = load_dataset("sort-of-clevr", "test", seed=seed, **config.dataset_options)
    num_images = len(dataset) // 20
    scenes = sort_of_clevr.scenes(num_images, seed, "test")
    colours = scenes.colours.reshape(-1)
    subtypes = scenes.subtypes.reshape(-1)
    centres = scenes.centres[np.repeat(np.arange(num_images), 20), colours]  # [N, 2]: x, y in pixels

    relations = getattr(model.fusion, "relations", None)
    captured: list[torch.Tensor] = []
    if relations is not None:

        def keep_weights(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured.append(module.attention(*inputs))

        relations.register_forward_pre_hook(keep_weights)
    questions, correct = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 500):
            batch = collate([dataset[i] for i in range(start, min(start + 500, len(dataset)))])
            inputs = {k: v for k, v in batch.items() if k != "label"}
            correct.append(model(inputs).argmax(1) == batch["label"])
            questions.append(model.encoders["text"](batch["text"], batch.get("text_lengths")))
    correct_all = torch.cat(correct).numpy()
    vectors = torch.cat(questions).numpy()
    # After k convolutions of stride 2 and padding 1 the map's cell j is centred on pixel 2^k j.
    layer = model.fusion.relation_layer if relations is not None else 0
    side = sort_of_clevr.IMAGE_SIZE
    for _ in range(layer):
        side = (side + 1) // 2
    cell = np.minimum(np.round(centres / 2**layer), side - 1)
    cell_index = (cell[:, 1] * side + cell[:, 0]).astype(np.int64)
    # The anchor's cells are those of the map of 75-pixel images (the default size).
    image_size = config.dataset_options.get("image_size", sort_of_clevr.IMAGE_SIZE)
    at_default_size = image_size == sort_of_clevr.IMAGE_SIZE
    weights = torch.cat(captured).numpy() if captured and at_default_size else None
    print(f"{args.checkpoint} on the test set of seed {seed} ({len(dataset)} questions)")
    header = f"{'subtype':<11}{'accuracy':>9}{'colour spread':>15}"
    if weights is not None and weights.shape[1] == side * side:
        header += f"{'weight at X':>13}{'argmax at X':>13}"
    print(header)

    def colour_variance(subtype: int) -> float:
        chosen = subtypes == subtype
        of_subtype, asked = vectors[chosen], colours[chosen]
        return float(np.stack([of_subtype[asked == c].mean(0) for c in np.unique(asked)]).var(0).sum())

    shape_variance = colour_variance(sort_of_clevr.QUESTION_SUBTYPES.index("shape"))
    for index, name in enumerate(sort_of_clevr.QUESTION_SUBTYPES):
        chosen = subtypes == index
        spread = colour_variance(index) / shape_variance
        line = f"{name:<11}{correct_all[chosen].mean():>9.3f}{spread:>15.3f}"
        if weights is not None and weights.shape[1] == side * side:
            w = weights[chosen]
            at_x = w[np.arange(len(w)), cell_index[chosen]]
            line += f"{at_x.mean():>13.3f}{(w.argmax(1) == cell_index[chosen]).mean():>13.3f}"
        print(line)


if __name__ == "__main__":
    main()
