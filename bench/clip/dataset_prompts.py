"""Class names and template sets of the built-in datasets, as CLIP's zero-shot evaluation words them.

Source: openai/CLIP ``data/prompts.md`` (commit d05afc4), which lists ``classes`` and ``templates`` for CIFAR10,
CIFAR100, STL10 and MNIST among its 26 datasets. It has no section for SVHN or Fashion-MNIST: SVHN's digits take
CLIP's MNIST class names and prompt, Fashion-MNIST takes torchvision's class names (``FashionMNIST.classes``) and
bench's own short template set below. CIFAR-100's 20 superclasses are in no CLIP list: their names are the release's
``coarse_label_names`` made readable (:data:`CIFAR100_COARSE_NAMES` says how, one by one).
"""
from .templates import OPENAI_CIFAR10_TEMPLATES

# prompts.md, "CIFAR100": the release's fine_label_names with "_" written as " ", in label order
CIFAR100_CLASSES = (
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow tree", "wolf", "woman", "worm",
)

# The release's coarse_label_names (label order) -> a name that reads in "a photo of a {}.": singular, spaces for
# underscores, "and" as "or" where a class is one of two kinds. vehicles_1 (bicycle, bus, motorcycle, pickup truck,
# train) and vehicles_2 (lawn mower, rocket, streetcar, tank, tractor) need distinct names for a classifier: the
# first holds the everyday road and rail vehicles, the second the special-purpose ones.
CIFAR100_COARSE_NAMES = {
    "aquatic_mammals": "aquatic mammal",
    "fish": "fish",
    "flowers": "flower",
    "food_containers": "food container",
    "fruit_and_vegetables": "fruit or vegetable",
    "household_electrical_devices": "household electrical device",
    "household_furniture": "household furniture",
    "insects": "insect",
    "large_carnivores": "large carnivore",
    "large_man-made_outdoor_things": "large man-made outdoor thing",
    "large_natural_outdoor_scenes": "large natural outdoor scene",
    "large_omnivores_and_herbivores": "large omnivore or herbivore",
    "medium_mammals": "medium-sized mammal",
    "non-insect_invertebrates": "non-insect invertebrate",
    "people": "person",
    "reptiles": "reptile",
    "small_mammals": "small mammal",
    "trees": "tree",
    "vehicles_1": "vehicle",
    "vehicles_2": "special-purpose vehicle",
}

# prompts.md, "STL10" (the release's class_names.txt, in label order)
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")

# prompts.md, "MNIST"; SVHN's digits too (label 0 is the digit 0 once torchvision's label 10 is read as 0)
DIGIT_CLASSES = tuple(str(d) for d in range(10))

# torchvision.datasets.FashionMNIST.classes (prompts.md has no Fashion-MNIST)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")

# prompts.md, "CIFAR100": the same 18 prompts as its CIFAR10 section
OPENAI_CIFAR100_TEMPLATES = OPENAI_CIFAR10_TEMPLATES

# prompts.md, "STL10"
OPENAI_STL10_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
)

# prompts.md, "MNIST"
OPENAI_MNIST_TEMPLATES = (
    'a photo of the number: "{}".',
)

# bench's own (prompts.md has no Fashion-MNIST): CLIP's plain prompt, the grey and small images, and what the
# ten classes have in common
FASHION_MNIST_TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a {}, a type of clothing or accessory.",
)
