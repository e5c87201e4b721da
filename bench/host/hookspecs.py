"""The whole plugin contract of bench: one ``register_<kind>`` hook per kind of thing, plus commands.

Every hook receives a ``register`` callback instead of returning values, so the host owns collection,
duplicate detection and validation. An implementation may accept fewer arguments than the spec names
(pluggy's opt-in arguments), which lets a hook grow a new argument without breaking old plugins.

Every ``register`` also accepts ``prefix=True``: the name is then a prefix (``"timm:"``) and ``factory(rest)``
returns the factory for the name ``prefix + rest``, so a plugin can offer open-ended names on demand.
The full guide, with each hook's exact signature, is ``docs/plugins.md``.
"""
import pluggy

hookspec = pluggy.HookspecMarker("bench")
hookimpl = pluggy.HookimplMarker("bench")


@hookspec
def register_encoders(register):
    """Register vision encoders.

    :param register: ``register(name, factory, summary, **meta)``; ``factory(embed_dim, image_size, **opts)``
        returns an ``nn.Module`` mapping images ``(N, 3, H, W)`` to features ``(N, embed_dim)``.
        Optional ``meta``: ``family`` (e.g. ``"resnet"``), ``source`` (where it comes from), ``params`` (the
        tower's parameter count at embed width 512 and 32 px, which ``bench list encoders`` shows without
        building it; ``bench.testing.check_encoder`` checks it against the built tower).
    """


@hookspec
def register_tokenizers(register):
    """Register tokenizers.

    :param register: ``register(name, factory, summary)``; ``factory(context_length, prompts)`` returns a
        callable ``tokenizer(texts, context_length=None, truncate=False) -> LongTensor (N, context_length)``
        with attributes ``vocab_size``, ``sot_token_id`` and ``eot_token_id``. ``prompts`` is every text
        the run will tokenize, for tokenizers that build a vocabulary from them.
    """


@hookspec
def register_templates(register):
    """Register text-template sets.

    :param register: ``register(name, factory, summary)``; ``factory()`` returns a list of strings, each
        with one ``{}`` placeholder for the class name.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    :param register: ``register(name, factory, summary, templates=None)``; ``factory(split, data_dir, seed,
        **opts)`` returns a :class:`bench.data.ArrayDataset` (uint8 images ``(N, H, W, 3)`` at the dataset's own
        size, int64 labels, class names as prompts say them). ``opts`` are the user's ``--data-opt`` pairs;
        ``templates`` names the template set runs use without ``--templates``.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``bench`` command line.

    :param cli: the root ``click.Group``; call ``@cli.command()`` on it.
    """
