"""A generated English corpus of simple, consistent prose for training the embedded model.

Every document is built from a seeded grammar: facts that always hold ("The sky is blue.",
"Paris is the capital of France."), short stories with named characters who repeat, counting
and ordered lists, opposites, categories, sums and plurals. Because the facts are consistent,
a trained model's next-token predictions become sharp, which is what makes a logit lens on it
meaningful. The text is written by this module alone (MIT, like the package): it needs no
download, no system package and no network, and the same seed gives the same corpus anywhere.
"""

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

COLOURS = {
    "sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "sun": "yellow",
    "sea": "blue", "milk": "white", "night": "dark", "banana": "yellow", "leaf": "green", "cherry": "red",
    "crow": "black", "cloud": "white", "lemon": "yellow", "frog": "green", "tomato": "red", "orange": "orange",
    "plum": "purple", "carrot": "orange", "chocolate": "brown", "mud": "brown", "ash": "grey", "rose": "red",
}
CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "England": "London", "Egypt": "Cairo", "Russia": "Moscow", "China": "Beijing", "Canada": "Ottawa",
    "Greece": "Athens", "Ireland": "Dublin", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Portugal": "Lisbon", "Austria": "Vienna", "Cuba": "Havana",
    "India": "Delhi", "Chile": "Santiago", "Turkey": "Ankara", "Mexico": "Mexico City",
}
SOUNDS = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa", "pig": "oink", "owl": "hoot",
    "lion": "roar", "horse": "neigh", "mouse": "squeak", "bee": "buzz", "snake": "hiss", "frog": "croak",
}
OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"), ("happy", "sad"),
    ("open", "closed"), ("light", "dark"), ("old", "young"), ("wet", "dry"), ("early", "late"), ("full", "empty"),
    ("high", "low"), ("hard", "soft"), ("loud", "quiet"), ("rich", "poor"), ("strong", "weak"), ("left", "right"),
    ("black", "white"), ("in", "out"), ("good", "bad"), ("near", "far"), ("long", "short"), ("thick", "thin"),
]
KINDS = {
    "bird": ["robin", "sparrow", "eagle", "owl", "crow", "swan", "parrot", "duck"],
    "fish": ["salmon", "trout", "shark", "cod", "tuna", "carp"],
    "flower": ["rose", "tulip", "daisy", "lily", "poppy", "violet"],
    "tree": ["oak", "pine", "birch", "maple", "willow", "elm"],
    "fruit": ["apple", "pear", "banana", "cherry", "plum", "lemon", "grape", "peach"],
    "tool": ["hammer", "saw", "spade", "drill", "wrench", "chisel"],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "brown", "pink"],
    "metal": ["iron", "gold", "silver", "copper", "tin", "lead"],
    "planet": ["Mars", "Venus", "Jupiter", "Saturn", "Mercury", "Neptune"],
    "instrument": ["piano", "violin", "drum", "flute", "guitar", "harp", "trumpet"],
}
HOMES = {"fish": "in the water", "bird": "in the trees", "bee": "in a hive", "rabbit": "in a burrow",
         "bear": "in a cave", "spider": "in a web", "horse": "in a stable", "cow": "in a barn", "pig": "in a sty"}
SEQUENCES = [
    "one two three four five six seven eight nine ten eleven twelve".split(),
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "January February March April May June July August September October November December".split(),
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z".split(),
    "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
    "spring summer autumn winter".split(),
]
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "\
    "seventeen eighteen nineteen twenty".split()
PLURALS = {"cat": "cats", "dog": "dogs", "mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth",
           "box": "boxes", "man": "men", "woman": "women", "goose": "geese", "leaf": "leaves", "knife": "knives",
           "bus": "buses", "city": "cities", "baby": "babies", "sheep": "sheep", "fish": "fish", "book": "books"}
PEOPLE = [("Alice", "she"), ("Bob", "he"), ("Tom", "he"), ("Anna", "she"), ("Sam", "he"), ("Lily", "she"),
          ("Max", "he"), ("Emma", "she"), ("Jack", "he"), ("Mia", "she"), ("Leo", "he"), ("Ruth", "she"),
          ("Oscar", "he"), ("Clara", "she"), ("Hugo", "he"), ("Nina", "she"), ("Peter", "he"), ("Grace", "she"),
          ("Daniel", "he"), ("Sarah", "she"), ("Henry", "he"), ("Julia", "she"), ("Felix", "he"), ("Rosa", "she"),
          ("Arthur", "he"), ("Helen", "she"), ("Victor", "he"), ("Olivia", "she"), ("George", "he"), ("Martha", "she")]
PLACES = ["market", "park", "river", "library", "school", "garden", "forest", "beach", "station", "farm",
          "kitchen", "village", "harbour", "museum", "bakery", "hill", "castle", "bridge", "meadow", "lake",
          "church", "hospital", "theatre", "office", "valley", "island", "mountain", "square", "zoo", "mill"]
ITEMS = ["bread", "apples", "a book", "milk", "a hat", "flowers", "eggs", "a kite", "fish", "cheese", "a lamp",
         "candles", "a map", "rice", "soap", "a basket", "a blanket", "butter", "a clock", "honey", "a coat",
         "paper", "a ribbon", "tea", "a bucket", "salt", "a ladder", "a mirror", "string", "onions"]
PETS = ["dog", "cat", "rabbit", "horse", "parrot", "goat", "pony", "hamster"]
ADJS = ["small", "big", "happy", "lazy", "clever", "old", "young", "brave", "quiet", "noisy", "friendly", "shy",
        "gentle", "curious", "sleepy", "proud", "careful", "cheerful", "grumpy", "patient"]
VERBS = ["run", "sleep", "play", "swim", "jump", "sing", "eat", "hide", "dig", "climb", "rest", "wander", "chase",
         "read", "paint", "dance", "whistle", "listen", "watch the clouds", "count the stars"]
JOBS = {"baker": "bakes bread", "farmer": "grows wheat", "teacher": "teaches children", "doctor": "helps the sick",
        "painter": "paints pictures", "sailor": "sails the sea", "builder": "builds houses", "tailor": "sews coats",
        "fisherman": "catches fish", "gardener": "grows flowers", "singer": "sings songs", "writer": "writes books",
        "miller": "grinds flour", "pilot": "flies planes", "cook": "makes soup", "judge": "decides cases"}
WEATHER = {"winter": "cold", "summer": "hot", "spring": "mild", "autumn": "cool"}


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _facts(r: random.Random) -> list[str]:
    thing, colour = r.choice(list(COLOURS.items()))
    country, city = r.choice(list(CAPITALS.items()))
    animal, sound = r.choice(list(SOUNDS.items()))
    a, b = r.choice(OPPOSITES)
    kind, members = r.choice(list(KINDS.items()))
    member = r.choice(members)
    home, where = r.choice(list(HOMES.items()))
    season, feel = r.choice(list(WEATHER.items()))
    choices = [
        f"The {thing} is {colour}.",
        f"The colour of the {thing} is {colour}.",
        f"{city} is the capital of {country}.",
        f"The capital of {country} is {city}.",
        f"The {animal} says {sound}.",
        f"When the {animal} is hungry, it says {sound}.",
        f"The opposite of {a} is {b}.",
        f"The opposite of {b} is {a}.",
        f"{_cap(_a(member))} is {_a(kind)}." if kind not in ("colour", "metal", "planet") else
        f"{_cap(member)} is {_a(kind)}.",
        f"{_cap(home)}s live {where}." if home not in ("fish", "sheep") else f"{_cap(home)} live {where}.",
        f"In {season} it is {feel}.",
        f"It is {WEATHER[season]} in {season}.",
        "A {} {}.".format(*r.choice(list(JOBS.items()))),
        "The {} {}.".format(*r.choice(list(JOBS.items()))),
    ]
    return [r.choice(choices)]


def _sums(r: random.Random) -> list[str]:
    x, y = r.randint(0, 10), r.randint(0, 10)
    if r.random() < 0.5:
        return [f"{_cap(NUMBERS[x])} plus {NUMBERS[y]} is {NUMBERS[x + y]}."]
    hi, lo = max(x, y), min(x, y)
    return [f"{_cap(NUMBERS[hi])} minus {NUMBERS[lo]} is {NUMBERS[hi - lo]}."]


def _sequence(r: random.Random) -> list[str]:
    seq = r.choice(SEQUENCES)
    start = r.randint(0, max(0, len(seq) - 4))
    stop = r.randint(start + 3, len(seq))
    sep = " " if seq is SEQUENCES[3] and r.random() < 0.5 else ", "
    return [f"{_cap(sep.join(seq[start:stop]))}."] if sep == ", " else [sep.join(seq[start:stop]) + "."]


def _plural(r: random.Random) -> list[str]:
    one, many = r.choice(list(PLURALS.items()))
    n = r.randint(2, 12)
    return [r.choice([f"One {one}, two {many}.", f"There is one {one}, and there are {NUMBERS[n]} {many}.",
                      f"I saw {NUMBERS[n]} {many} and one {one}."])]


def _story(r: random.Random) -> list[str]:
    (name, he), (other, she) = r.sample(PEOPLE, 2)
    his = {"he": "his", "she": "her"}[he]
    place, item, pet = r.choice(PLACES), r.choice(ITEMS), r.choice(PETS)
    adj, verb = r.choice(ADJS), r.choice(VERBS)
    n = r.randint(2, 12)
    lines = [
        f"{name} went to the {place} to buy {item}.",
        f"{_cap(he)} paid {NUMBERS[n]} coins for it.",
        f"{name} has {_a(adj)} {pet} called {r.choice(['Spot', 'Rex', 'Bella', 'Milo', 'Daisy', 'Pip'])}.",
        f"The {pet} likes to {verb} in the {r.choice(PLACES)}.",
        f"{name} gave {item} to {other}, and {other} thanked {name}.",
        f"Then {name} and {other} walked home together.",
        f"{_cap(his)} friend {other} was waiting by the {place}.",
        f"{other} said that {he} was very kind.",
        f"When it was late, {name} went to sleep.",
        f"{name} looked at the sky. The sky was {r.choice(['blue', 'grey', 'dark', 'clear'])}.",
        f"Every {r.choice(SEQUENCES[1])}, {name} goes to the {place}.",
        f"{_cap(she)} asked {name} where {he} had been, and {name} said the {place}.",
    ]
    job = r.choice(list(JOBS))
    lines += [f"{name} is {_a(job)}. Every day {he} {JOBS[job]}.", f"{name} is {r.randint(5, 90)} years old.",
              f"The train to the {place} leaves at {r.randint(1, 12)} o'clock.",
              f"There were {r.randint(2, 99)} people at the {place}, and {name} knew all of them."]
    start = r.randint(0, 3)
    picked = lines[start:start + r.randint(3, 6)]
    if r.random() < 0.5:
        picked.append(lines[r.randint(12, len(lines) - 1)])
    return picked


GENERATORS = [(_facts, 5), (_story, 3), (_sums, 1), (_sequence, 1), (_plural, 1)]


def document(r: random.Random) -> str:
    """One paragraph of 3 to 9 sentences drawn from the grammar."""
    funcs, weights = zip(*GENERATORS, strict=True)
    sentences: list[str] = []
    target = r.randint(3, 9)
    while len(sentences) < target:
        sentences += r.choices(funcs, weights)[0](r)
    return " ".join(sentences)


def documents(n: int, *, seed: int = 0) -> Iterator[str]:
    """Yield `n` generated documents; the same `seed` gives the same documents everywhere."""
    r = random.Random(seed)
    for _ in range(n):
        yield document(r)


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """Train and held-out documents; held-out ones come from a different seed and are never trained on."""

    train: list[str]
    heldout: list[str]

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of every train and held-out document, recorded in the trained model's metadata."""
        return hashlib.sha256("\n".join(self.train + ["---"] + self.heldout).encode()).hexdigest()

    @property
    def n_bytes(self) -> int:
        """UTF-8 bytes of every document, one newline each."""
        return sum(len(d.encode()) + 1 for d in self.train + self.heldout)

    def __repr__(self) -> str:
        return f"Corpus(train={len(self.train)} docs, heldout={len(self.heldout)} docs, {self.n_bytes / 1e6:.1f} MB)"


def build_corpus(*, n_train: int = 60_000, n_heldout: int = 1_000, seed: int = 0) -> Corpus:
    """The training corpus and its held-out split (held-out documents that also occur in train are dropped)."""
    train = list(documents(n_train, seed=seed))
    seen = set(train)
    heldout = [d for d in documents(n_heldout * 2, seed=seed + 1_000_003) if d not in seen][:n_heldout]
    return Corpus(train=train, heldout=heldout)
