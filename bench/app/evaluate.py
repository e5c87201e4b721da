"""Load a bench checkpoint safely and evaluate it again, or classify image files with it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic_files import check_writable_folder
from ..clip.model import create_model_from_cfg
from ..clip.pretrained import is_openai_state_dict, load_openai_state_dict
from ..clip.templates import fill, load_templates
from ..clip.tokenizer import BPE_FILE, VOCABULARY_KEY, MinimalTokenizer, default_bpe_path
from ..config import RunConfig
from ..data.class_split import (canonical_holdout, check_holdout_spec, class_indices, holdout_count,
                                resolve_holdout)
from ..data.imagefolder import dataset_name
from ..distributed.world import resolve_device
from ..engine.build import autocast_dtype_for
from ..engine.checkpoint import load_weights, saved_ranks
from ..errors import BenchError
from ..evaluation.holdout import seen_unseen_metrics
from ..evaluation.metrics import classification_metrics
from ..evaluation.zero_shot import (build_zero_shot_classifier, classifier_from_features, image_features,
                                    prompt_features)
from ..host.manager import get_entry
from ..results.columns import config_key
from ..results.run_folder import confusion_frame, file_safe, is_run_folder, provenance, write_csv
from ..safe_load import load_checkpoint
from .dataset_lookup import (Target, dataset_split, decode_options, load_target, published_templates,
                             zero_shot_templates)
from .transfer import record_transfer, safe_name, transfer_row, transfer_run_id
from .validation import check_data_dir, check_device, check_positive, check_saved_names, saved_config


def checkpoint_tokenizer(ckpt: dict, name: str, context_length: int, prompts):
    """The tokenizer a checkpoint's run trained with: the word vocabulary it kept, else the registered ``name``
    (built for ``prompts``). CLIP's BPE never falls back here: a vocabulary built from other prompts than the
    run's would give other ids than those its text tower learned."""
    if ckpt.get(VOCABULARY_KEY) is not None:
        return MinimalTokenizer(ckpt[VOCABULARY_KEY], context_length)
    if name == "clip_bpe" and default_bpe_path() is None:
        raise BenchError(f"CLIP BPE file {BPE_FILE} not found, and the checkpoint's run tokenized with it; install "
                         f"open_clip_torch, or point BENCH_BPE_PATH at the file")
    return get_entry("tokenizers", name).create(context_length, prompts)


def load_model(path, device, ckpt: dict | None = None) -> tuple[torch.nn.Module, RunConfig, dict]:
    """Rebuild the run's model from its checkpoint (``ckpt``: the file already loaded); a mismatch is explained,
    not a shape traceback."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if "model" not in ckpt or "config" not in ckpt:
        raise BenchError(f"{path} is not a bench checkpoint (no 'model'/'config' entries) nor an OpenAI-layout "
                         f"state dict; pass a last.pt/best.pt written by bench run")
    cfg = saved_config(ckpt, path)
    # the tokenizer is looked up only where the checkpoint kept no vocabulary (checkpoint_tokenizer)
    check_saved_names(cfg, path, ("encoders",) if ckpt.get(VOCABULARY_KEY) is not None else ("encoders", "tokenizers"))
    model = create_model_from_cfg(cfg.model)
    load_weights(model, ckpt["model"], ckpt, path)
    return model.to(device).eval(), cfg, ckpt


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint's model and what every row of its evaluation records about it."""

    model: torch.nn.Module
    cfg: RunConfig  # the run's configuration (defaults for an OpenAI state dict)
    ckpt: dict
    pretrained: bool  # an OpenAI-layout state dict: its own preprocessing, no run
    epoch: int | None
    encoder: str
    config_id: str
    templates: str  # the run's template set
    context_length: int
    seed: int | None
    preprocessing: dict  # image_size, normalization (and interpolation) as rows record them
    autocast_dtype: torch.dtype | None
    image_size: int | None  # what test images are resized to; None where the model's preprocessing resizes
    holdout_classes: tuple  # the classes reported as unseen on the home dataset
    drawn: tuple = ()  # the unseen classes the run recorded (a count's draw), where they are its holdout_classes


def open_checkpoint(path, device, holdout_classes=()) -> LoadedCheckpoint:
    """Load a bench checkpoint or an OpenAI-format state dict; ``holdout_classes`` as asked, or the run's own."""
    ckpt = load_checkpoint(path)
    if is_openai_state_dict(ckpt):
        model, info = load_openai_state_dict(ckpt, device)
        return LoadedCheckpoint(model, RunConfig(), ckpt, True, None, "openai_state_dict", "", "openai",
                                info["context_length"], None,
                                {k: info[k] for k in ("image_size", "normalization", "interpolation")},
                                autocast_dtype_for("auto", device), None, tuple(holdout_classes))  # bf16 on CUDA
    model, cfg, ckpt = load_model(path, device, ckpt)
    size = cfg.model.image_resolution
    holdout = _checkpoint_holdout(cfg, holdout_classes)
    # the classes a count drew when the run trained, not a new draw (numpy keeps no promise that a seed's stream
    # stays the same across its versions)
    drawn = tuple(ckpt.get("unseen_classes") or ()) if holdout == tuple(cfg.holdout_classes) else ()
    return LoadedCheckpoint(model, cfg, ckpt, False, ckpt.get("epoch"), cfg.model.encoder,
                            config_key(cfg, saved_ranks(ckpt, path)),
                            cfg.templates, cfg.model.text.context_length, cfg.seed,
                            {"image_size": size, "normalization": "[-1,1]"}, autocast_dtype_for(cfg.precision, device),
                            size, holdout, drawn)


@dataclass(frozen=True)
class Evaluation:
    """One dataset a checkpoint is evaluated on: its test split, template sets and unseen classes."""

    name: str
    is_home: bool  # the run's own dataset (any dataset for a pretrained model): no transfer row
    target: Target
    sets: dict  # template set name -> templates
    unseen: tuple
    opts: dict  # --data-opt values, which belong to the run's own dataset
    folder: str | None


def plan_evaluations(run: LoadedCheckpoint, datasets: list, templates, data_dir, limit_test) -> list[Evaluation]:
    """Each dataset's test split loaded (resized to the model's input) with its template sets and unseen classes."""
    cfg, home = run.cfg, run.cfg.dataset
    evaluations = []
    for name in datasets:
        is_home = run.pretrained or name == home
        folder = (data_dir or cfg.data_dir) if name == home else data_dir
        # a state dict's own transform resizes (image_size None): an image folder is decoded at its input all the same
        opts = dict(cfg.data_opts) if name == home else \
            decode_options(name, run.image_size or run.preprocessing.get("image_size"))
        # an OpenAI state dict is measured as bench eval --open-clip measures the same weights: CLIP's published
        # prompts for each dataset
        templates_name = published_templates(name) if run.pretrained else \
            run.templates if is_home else zero_shot_templates(name, run.templates)
        target = load_target(name, templates_name, folder, cfg.data_seed, limit_test or cfg.limit_test, run.image_size,
                             opts)
        unseen = ()
        if run.holdout_classes and is_home:
            if run.seed is None and holdout_count(run.holdout_classes) is not None:
                raise BenchError("--holdout-classes COUNT draws classes with a run's seed, and a pretrained model has "
                                 "none; name the classes (--holdout-classes cat,truck)")
            unseen = run.drawn or resolve_holdout(run.holdout_classes, target.test.classes, run.seed or 0, name)
        evaluations.append(Evaluation(name, is_home, target, template_sets(templates or [target.templates_name]),
                                      tuple(unseen), opts, folder))
    return evaluations


def suite_options(cfg: RunConfig, evals=(), robust_limit=None, robust_severities=()):
    """The evaluation suite as ``bench run`` measures it for ``cfg``: ``evals``, drawn with the run's data seed (the
    probe's validation split, the corruption noise), on the run's robustness images and severities where
    ``robust_limit`` / ``robust_severities`` leave them unset. ``bench run`` and ``bench eval`` of its checkpoint
    both build it here, so the two agree on every suite column."""
    from ..evaluation.suite import SuiteOptions

    return SuiteOptions(evals=tuple(evals), robust_limit=cfg.robust_limit if robust_limit is None else robust_limit,
                        robust_severities=tuple(robust_severities or cfg.robust_severities), seed=cfg.data_seed)


def evaluate_checkpoint(path, templates=None, dataset=None, data_dir=None, limit_test=None, device="auto",
                        per_template: bool = False, evals=(), robust_limit=None, robust_severities=(), out=None,
                        holdout_classes=(), record: bool = True) -> pd.DataFrame:
    """Zero-shot metrics of a checkpoint, one row per dataset x template set (default: the run's dataset and set).

    ``dataset``: a name or a list of names. A dataset other than the run's is zero-shot transfer: its images are
    resized to the model's input, its template set is the one it names (else the run's), and with ``record`` each
    set's row is also appended to the ``runs.csv`` of the results folder holding the checkpoint's run (see
    :mod:`bench.app.transfer`); the table's ``recorded`` attribute counts them. ``holdout_classes``: report seen,
    unseen and harmonic top-1 on the run's dataset with these classes unseen (default: those the run held out).
    ``per_template`` adds one row per single template of each set (the template-set ablation). ``evals`` (any of
    retrieval, probe, robustness) adds the suite's columns to each set's row, measured as the run measured them
    (:func:`suite_options`: its data seed, and its ``robust_limit`` and ``robust_severities`` unless given). Every
    row records the protocol: checkpoint and its digest, templates, image size, normalisation.
    With ``out``, the table, per-class accuracies, confusion matrices and suite tables are written there.
    An OpenAI-format state dict (what :func:`bench.build_model` loads) is evaluated with OpenAI's preprocessing.
    """
    from ..evaluation.suite import FeatureCache, file_digest

    datasets = dataset_list(dataset)
    check_eval_inputs(templates, datasets, data_dir, limit_test, device, out)
    check_holdout_spec(holdout_classes)
    holdout_classes = canonical_holdout(holdout_classes)  # as bench run keeps it: the row names the split alike
    device = resolve_device(device)
    run = open_checkpoint(path, device, holdout_classes)
    cfg = run.cfg
    # the run's own dataset however it is typed: a run saved before names were normalised keeps its spelling
    datasets = [cfg.dataset if d == dataset_name(cfg.dataset) else d for d in datasets]
    if holdout_classes and datasets and not run.pretrained and cfg.dataset not in datasets:
        raise BenchError(f"--holdout-classes splits the run's own dataset {cfg.dataset!r}, which --dataset does not "
                         f"list; add it (--dataset {cfg.dataset},{datasets[0]}) or drop --holdout-classes")
    evaluations = plan_evaluations(run, datasets or [cfg.dataset], templates, data_dir, limit_test)
    suite = suite_options(cfg, evals, robust_limit, robust_severities)
    tokenizer = checkpoint_tokenizer(run.ckpt, cfg.tokenizer, run.context_length,
                                     [p for e in evaluations for t in e.sets.values()
                                      for p in fill(t, e.target.test.classes)])
    digest = file_digest(path)
    cache = FeatureCache(_writable(Path(path).parent / "features"))
    rows, parts, recorded = [], [], 0
    for e in evaluations:
        test = e.target.test
        protocol = {"checkpoint": str(path), "checkpoint_sha256": digest, "checkpoint_epoch": run.epoch,
                    "encoder": run.encoder, "config_id": run.config_id, "seed": run.seed,
                    "dataset": e.name if run.pretrained else cfg.dataset, "eval_dataset": e.name,
                    "n_classes": len(test.classes), "test_images": len(test),
                    "native_image_size": e.target.native_size, **run.preprocessing, **test.info}
        if e.unseen:
            protocol.update(holdout_classes=",".join(run.holdout_classes), unseen_classes=",".join(e.unseen))
        result = evaluate_sets(run.model, tokenizer, test, e.sets, device, run.autocast_dtype,
                               per_template=per_template, suite=suite, cache=cache,
                               # a transfer dataset's features are keyed by its name too: split names may repeat
                               weights_id=f"ckpt-{digest}" if e.is_home else f"ckpt-{digest}-{safe_name(e.name)}",
                               train=lambda e=e: _train_split(e.name, e.folder, cfg.data_seed, e.opts,
                                                              cfg.limit_train, run.image_size),
                               unseen=class_indices(test.classes, e.unseen) if e.unseen else None)
        run_name = Path(path).resolve().parent.name
        table = [{"run_id": _row_id(run_name, e, row), **protocol, "templates": run.templates, **row}
                 for row in result.rows]
        if record and not e.is_home:
            recorded += _record_transfer_rows(path, cfg, e.target, table, result, device, run.ckpt.get("run_id"))
        rows += table
        parts.append((e.name, test.classes, result))
    table = pd.DataFrame(rows)
    table.attrs["recorded"] = recorded
    if out is not None:
        write_eval_files(out, table, parts)
    return table


def _row_id(run_name: str, e: Evaluation, row: dict) -> str:
    """The run id a row of ``bench eval``'s table shows. On a transfer dataset it is the id its runs.csv row is
    recorded under (:func:`bench.app.transfer.transfer_run_id`), which a user greps runs.csv for; a single
    template's row, printed only, adds the template's index to its set's id. On the run's own dataset, which
    records nothing: ``<run>:<template set>``."""
    label = row["eval_templates"]
    if e.is_home:
        return f"{run_name}:{label}"
    set_name = label[:label.rindex("[")] if row["template"] else label  # a single template: "<set>[<index>]"
    recorded = transfer_run_id(run_name, e.target.dataset, set_name if set_name != e.target.templates_name else None)
    return recorded + label[len(set_name):]


def _train_split(dataset: str, data_dir, seed: int, opts: dict, limit, image_size: int | None):
    """A dataset's training split for the suite's linear probe, at the model's input size as its test split."""
    from ..data.resize import fit_to_size

    train = dataset_split(dataset, "train", data_dir, seed, opts, limit)
    return train if image_size is None else fit_to_size(train, image_size, dataset)


def dataset_list(dataset) -> list[str]:
    """``--dataset``: None, one name, or several (each once, in order), as bench keeps names
    (:func:`bench.data.imagefolder.dataset_name`)."""
    if dataset is None:
        return []
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    return list(dict.fromkeys(dataset_name(n) for n in names if n))


def _checkpoint_holdout(cfg: RunConfig, given) -> tuple:
    """The classes a checkpoint's run held out (its configuration's), or ``given`` for a run that held out none."""
    saved = tuple(cfg.holdout_classes)
    given = tuple(given or ())
    if given and saved and canonical_holdout(given) != canonical_holdout(saved):  # names in any order: one split
        raise BenchError(f"the checkpoint's run held out {','.join(saved)} (saved in its configuration), not "
                         f"{','.join(given)}; drop --holdout-classes to report its own split")
    return saved or given


def _record_transfer_rows(path, cfg: RunConfig, target, table: list, result, device, ckpt_run_id=None) -> int:
    """Each set's transfer row appended to the runs.csv of the results folder holding the checkpoint's run folder
    (``<results>/runs/<run id>/``), linked to the run's own row there. Only a finished run's final weights
    (``last.pt``) are recorded, as its own row describes them; another checkpoint, a row already recorded, a
    checkpoint whose run has no row, or one another run wrote (``ckpt_run_id``, copied in) is said on stderr and
    printed only."""
    import sys

    from ..results.runs_csv import read_runs

    run_dir = Path(path).resolve().parent
    results = run_dir.parent.parent
    source = read_runs(results) if run_dir.parent.name == "runs" else pd.DataFrame()
    source = source[source["run_id"].astype(str) == run_dir.name] if "run_id" in source.columns else source
    foreign = ckpt_run_id is not None and ckpt_run_id != run_dir.name
    read_only = not all(os.access(f, os.W_OK | os.X_OK) for f in (results, results / "runs"))
    if not len(source) or Path(path).name != "last.pt" or foreign or read_only:
        why = (f"is run {ckpt_run_id}'s checkpoint, not run {run_dir.name}'s" if foreign and len(source) else
               f"is in results folder {results}, which is not writable for you" if read_only and len(source) else
               "is not a finished run's last.pt (a run's rows describe its final weights)" if len(source) else
               "is not in a run folder with a row in its results folder's runs.csv")
        print(f"bench: note: {path} {why}; its transfer rows are printed, not recorded", file=sys.stderr)
        return 0
    base = {k: v for k, v in source.iloc[0].to_dict().items() if not (isinstance(v, float) and np.isnan(v))}
    prov = provenance(device)
    count = 0
    for row in table:
        label = row["eval_templates"]
        if row["template"]:  # a single template of a set: printed only
            continue
        run_id = row["run_id"]  # the id printed is the id recorded (_row_id)
        if run_id in set(read_runs(results)["run_id"].astype(str)):
            print(f"bench: note: {run_id} is already in {results / 'runs.csv'}; delete its row and folder to record "
                  f"it again", file=sys.stderr)
            continue
        metrics = {"top1": row["zeroshot_top1"], "top5": row["zeroshot_top5"],
                   "mean_per_class_recall": row["mean_per_class_recall"], "per_class": result.per_class[label],
                   "confusion": result.confusions[label], "predictions": result.predictions[label]}
        evaluated = Target(target.dataset, label, [], target.test, target.native_size)
        extra = {k: prov[k] for k in ("time", "device_name", "hostname", "git_commit", "git_dirty", "torch_version",
                                      "cuda_version", "bench_version", "python_version", "command", "numpy_version")}
        record_transfer(results, transfer_row(base, run_id, evaluated, metrics, device=str(device),
                                              checkpoint_sha256=row["checkpoint_sha256"],
                                              torch_threads=torch.get_num_threads(), **extra),
                        evaluated, metrics, cfg.to_dict())
        count += 1
    return count


def check_eval_inputs(templates, dataset, data_dir, limit_test, device, out):
    """Every named input exists before a model is loaded."""
    check_positive("--limit-test", limit_test)
    for name in templates or []:
        get_entry("templates", name)
    for name in dataset_list(dataset):
        get_entry("datasets", name)
    check_data_dir(data_dir)
    if data_dir is not None and len(dataset_list(dataset)) > 1:
        raise BenchError("--data-dir names one dataset's folder; evaluate one --dataset at a time with it, or leave it "
                         "out: the others are read from their default folders (BENCH_DATASETS_DIR names one for all "
                         "of cifar100, stl10, svhn, mnist and fashion_mnist; BENCH_DATA_DIR cifar10's)")
    check_device(device)
    if out is not None:
        if is_run_folder(out):
            raise BenchError(f"--out {out} is a run folder, whose per_class.csv and confusion.csv bench eval would "
                             f"replace with its own; pass another folder, e.g. --out {Path(out) / 'eval'}")
        check_writable_folder(out)


def template_sets(names) -> dict:
    return {name: load_templates(name) for name in names}


@dataclass
class SetResults:
    """What :func:`evaluate_sets` measured: one row per template set (and single template), with their tables."""

    rows: list = field(default_factory=list)
    per_class: dict = field(default_factory=dict)  # label -> per-class accuracy
    confusions: dict = field(default_factory=dict)  # set name -> confusion matrix
    predictions: dict = field(default_factory=dict)  # set name -> each test image's top-1 class
    tables: dict = field(default_factory=dict)  # "<suite table>-<set>" -> DataFrame


def evaluate_sets(model, tokenizer, test, sets: dict, device, autocast_dtype, *, per_template=False, suite=None,
                  cache=None, weights_id="", train=None, unseen=None) -> SetResults:
    """Zero-shot (and the ``suite``'s evaluations) of ``model`` on ``test`` for each template set of ``sets``.

    The test images are encoded once; each set (and with ``per_template`` each of its templates) gets its own
    classifier. ``train``: a callable giving the linear probe's training split, asked for only when needed.
    ``unseen``: label indices of held-out classes, for each row's seen, unseen and harmonic top-1.
    """
    from ..evaluation.suite import FeatureCache, features, run_suite

    cache = cache or FeatureCache(None)
    feats = features(model, test, device, autocast_dtype, cache, weights_id)
    labels = torch.as_tensor(test.labels)
    out, probe_columns = SetResults(), None
    for name, tpl in sets.items():
        # each prompt of the set encoded once: the set's classifier, its single templates' and the suite's share them
        text = prompt_features(model, test.classes, tpl, tokenizer, device, autocast_dtype)
        per_prompt = text.view(len(test.classes), len(tpl), -1)
        for label, chosen, rows in [(name, tpl, per_prompt)] + ([(f"{name}[{i}]", [t], per_prompt[:, i:i + 1])
                                                                 for i, t in enumerate(tpl)] if per_template else []):
            classifier = classifier_from_features(rows, len(test.classes), len(chosen))
            m = classification_metrics(100.0 * feats @ classifier.cpu(), labels)
            row = {"eval_templates": label, "template": chosen[0] if label != name else "",
                   "n_templates": len(chosen), "zeroshot_top1": m["top1"], "zeroshot_top5": m["top5"],
                   "mean_per_class_recall": m["mean_per_class_recall"]}
            if unseen is not None:
                row.update(seen_unseen_metrics(m["predictions"], test.labels, unseen))
            out.per_class[label] = m["per_class"]
            if label == name:  # one confusion matrix per set; single templates get per-class accuracy only
                out.confusions[label], out.predictions[label] = m["confusion"], m["predictions"]
            if suite is not None and suite.evals and label == name:
                evals = tuple(e for e in suite.evals if e != "probe" or probe_columns is None)
                columns, set_tables = run_suite(model, replace(suite, evals=evals),
                                                train=train() if "probe" in evals else test, test=test,
                                                templates=chosen, tokenizer=tokenizer, device=device,
                                                autocast_dtype=autocast_dtype, cache=cache, weights_id=weights_id,
                                                text_features=text)
                if "probe" in evals:
                    probe_columns = {k: v for k, v in columns.items() if k.startswith("probe_")}
                row.update(columns, **(probe_columns or {}))
                out.tables.update({f"{k}-{name}": v for k, v in set_tables.items()})
            out.rows.append(row)
    return out


def write_eval_files(out, table: pd.DataFrame, parts: list):
    """``eval.csv``, then per evaluated dataset (``parts``: ``(dataset, classes, SetResults)``) its per-class
    accuracies, confusion matrices and suite tables; with several datasets each file name starts with the dataset's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "eval.csv")

    def safe(text):
        return file_safe(text, keep="-_", fill="_")

    for dataset, classes, result in parts:
        prefix = f"{safe(dataset)}-" if len(parts) > 1 else ""
        write_csv(pd.DataFrame({"class": list(classes), **result.per_class}), out / f"{prefix}per_class.csv")
        for label, cm in result.confusions.items():
            write_csv(confusion_frame(cm, classes), out / f"{prefix}confusion-{safe(label)}.csv")
        for name, t in result.tables.items():
            write_csv(t, out / f"{prefix}{name}.csv")


def _writable(folder: Path) -> Path | None:
    """The feature cache folder beside the checkpoint, or None (memory only) where it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def check_image(path: str):
    """``path`` is a file PIL opens as an image (its header read, its pixels not decoded), else a one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            pass
    except FileNotFoundError:
        raise BenchError(f"image {path!r} does not exist; pass paths to image files") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BenchError(f"{path!r} is not an image PIL can read ({type(exc).__name__}); pass PNG or JPEG files") from None


def predict_images(path, image_paths, top_k=3, templates=None, device="auto"):
    """For each image file, the ``top_k`` classes and their probabilities under the zero-shot classifier."""
    check_positive("--top-k", top_k, allow_none=False)
    if templates is not None:
        get_entry("templates", templates)
    check_device(device)
    from ..data.imagefolder import decode

    device = resolve_device(device)
    for p in image_paths:  # a bad path is said before the model loads; decoding waits for the model's input size
        check_image(p)
    ckpt = load_checkpoint(path)
    if is_openai_state_dict(ckpt):
        raise BenchError(f"{path} is an OpenAI-layout state dict, which names no classes to predict; bench predict "
                         f"takes a checkpoint written by bench run (bench eval {path} measures the state dict)")
    model, cfg, ckpt = load_model(path, device, ckpt)
    images = np.stack([decode(p, cfg.model.image_resolution) for p in image_paths])  # each file decoded once
    classes = ckpt.get("classes") or list(get_entry("datasets", cfg.dataset).create("test", cfg.data_dir, 0).classes)
    name = templates or cfg.templates
    tpl = load_templates(name)
    probs = class_probabilities(model, cfg, ckpt, images, classes, tpl, device)
    k = min(top_k, len(classes))
    for p, row in zip(image_paths, probs):
        values, indices = row.topk(k)
        yield str(Path(p)), [(classes[i], float(v)) for v, i in zip(values, indices)]


def class_probabilities(model, cfg: RunConfig, ckpt: dict, images: np.ndarray, classes, templates, device):
    """Each uint8 ``(N, H, W, 3)`` image's probabilities over ``classes`` under the zero-shot classifier of
    ``templates`` (CLIP's 100 x cosine, softmaxed), through the tokenizer the checkpoint's run trained with."""
    tokenizer = checkpoint_tokenizer(ckpt, cfg.tokenizer, cfg.model.text.context_length, fill(templates, classes))
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    classifier = build_zero_shot_classifier(model, classes, templates, tokenizer, device, autocast_dtype)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
    return (100.0 * image_features(model, x, autocast_dtype=autocast_dtype) @ classifier).softmax(dim=-1).cpu()


def test_model_inference(checkpoint=None, n_images: int = 5, device="auto", templates=("a photo of a {}",),
                         results="results", echo=print) -> list[dict]:
    """The spec's ``test_model_inference()``: the first ``n_images`` test images of a checkpoint's dataset, each
    printed with its true class, the class the model picks among all classes and its confidence, as the
    reference prints them; returns the same as dicts.

    ``checkpoint``: a checkpoint written by ``bench run`` (default: the newest ``best.pt`` under
    ``results/runs``, where the reference reads ``best_clip_model.pth``). The prompt is the reference's one,
    ``"a photo of a {}"``; the confidence is a probability (CLIP's 100 x cosine, softmaxed over the classes)
    where the reference prints a raw dot product. Named ``test_*`` as the spec names it: a test module imports
    ``bench`` and calls ``bench.test_model_inference``, so that pytest does not collect it as a test.
    """
    from ..data.resize import fit_to_size

    check_positive("n_images", n_images, allow_none=False)
    check_device(device)
    device = resolve_device(device)
    path = Path(checkpoint) if checkpoint is not None else _newest_best(Path(results))
    model, cfg, ckpt = load_model(path, device)
    test = dataset_split(cfg.dataset, "test", cfg.data_dir, cfg.data_seed, dict(cfg.data_opts), n_images)
    test = fit_to_size(test, cfg.model.image_resolution, cfg.dataset)
    classes = list(test.classes)
    probs = class_probabilities(model, cfg, ckpt, test.images, classes, list(templates), device)
    rows = []
    for i, (p, label) in enumerate(zip(probs, test.labels)):
        k = int(p.argmax())
        rows.append({"image": i + 1, "true_class": classes[int(label)], "predicted_class": classes[k],
                     "confidence": float(p[k])})
        echo(f"Image {i + 1}:\n  True class: {classes[int(label)]}\n  Predicted class: {classes[k]}\n"
             f"  Confidence: {float(p[k]):.4f}\n")
    return rows


def _newest_best(results: Path) -> Path:
    found = sorted(results.glob("runs/*/best.pt"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise BenchError(f"no best.pt under {results}/runs; train a model with bench run, or pass checkpoint=PATH")
    return found[-1]
