"""Concept matching: which captions mention which vocabulary classes.

This module owns caption/lexicon normalisation, the surface forms of every lemma, the compiled
multi-pattern matcher, the built-in negative-context rules for ImageNet's known traps, and the
label policies.

How a caption is matched (``mode="curate"``):

1. **Normalise** (:func:`normalise`, the same code for captions and for lemmas): HTML tags become
   spaces and common HTML entities are decoded, then Unicode NFKC, lower case plus the few
   case-folds that lower-casing misses (ß→ss, ς→σ), and every character that is not a letter,
   digit or combining mark (punctuation, apostrophes, hyphens, dashes, underscores, whitespace)
   separates words; runs collapse to one space and the text is padded with one space each side.
   A possessive ``tiger's`` thus reads ``tiger s`` (the word "tiger" is there), ``bow-tie`` reads
   ``bow tie``. Pure-ASCII rows (most web text) skip NFKC and take a byte-table path over the whole
   batch with the same result: with numba installed, one compiled pass (no GIL) that also flags the
   rows holding HTML or non-ASCII text, which alone go through polars' kernels and are spliced
   back; without numba, vectorised numpy over the batch.
2. **Surface forms** per lemma (:func:`surface_forms`): the normalised lemma, its regular plural,
   WordNet's irregular plurals (``noun.exc``: geese, mice, oxen, loaves) applied to
   the last word (so multi-word lemmas get plurals: "german shepherds"), and the joined spelling of
   multi-word lemmas ("bowtie", hashtags such as "#germanshepherd"). Hyphenated and spaced
   spellings need no variant: hyphens normalise to spaces on both sides; a possessive lemma also
   gets its run-together spelling ("potter's wheel" -> "potters wheel"). Parenthesised qualifiers
   in display names ("ram (adult male sheep)") are dropped.
3. **One pass** over the whole batch of normalised captions laid end to end in one buffer, finding
   every occurrence of every form as whole words ("cat" never matches "catalog"), overlapping ones
   included. With numba this is :class:`WordTable`: a hash table of the forms and of their leading
   words, probed once per word of the text (and for the next words only while they extend some
   form), every hit checked byte for byte; without numba (or on a 64-bit hash clash between two
   forms) it is an Aho–Corasick automaton (``ahocorasick-rs``) of the patterns `` form `` padded
   with a space each side: the same hits. Overlaps are then resolved so the **longest match wins**
   ("tiger shark" is not also "tiger"; when two mentions cross, the longer one is kept, the earlier
   one on a tie).
4. **Negative context**: a rule vetoes one class's match (optionally only through some of its
   lemmas) when any of its context words occurs anywhere in the caption as a whole word (crane the
   bird is vetoed by "construction", crane the machine by "bird"). Built-in rules live in
   ``NEGATIVE_RULES``; the vocabulary's ``negatives`` column adds more (vetoing every lemma of that
   class). Single characters and English function words (``STOP_FORMS``: "a", "it", "who", "may",
   all lemmas somewhere in WordNet) are never matched. Context words sit in a second automaton that only runs over the captions holding a
   mention some rule could veto. ``BLOCKED_LEMMAS`` lists lemmas too generic to be evidence on
   their own ("light" for the lighter class).
5. **Label policy** turns the mentions into ``labels`` (class indices, the vocabulary's ``label``):

   - ``all``: every matched class, sorted ascending, each once;
   - ``drop``: the class when exactly one class matched, else an empty list (captions that name two
     or more classes are dropped from labelling, as LAIONet did; the row itself stays so the table
     keeps its length: filter ``labels.list.len() == 1`` for the subset);
   - ``first``: the class of the first mention by position; a first mention that is itself
     ambiguous (one surface form, several classes, none vetoed) gives the lowest label.

   Null or empty captions get an empty list.

``mode="reference"`` reproduces the reference study's counting instead: the caption is lower-cased,
tokenised with a regular expression standing in for nltk's tokenizer (nltk's punkt data is not
available offline; the pattern keeps hyphenated words whole as Treebank does), each token is
lemmatised with nltk's ``WordNetLemmatizer`` (noun), and a class matches when all the tokens of one
of its synonyms occur anywhere in the caption, in any order. No vetoes, no positions (so policy
``first`` and spans are not available in this mode).
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from curate.errors import CurateError

POLICIES = ("all", "drop", "first")
MODES = ("curate", "reference")

LABELS_DTYPE = pl.List(pl.Int32)
SPANS_DTYPE = pl.List(pl.Struct({"label": pl.Int32, "start": pl.Int32, "end": pl.Int32, "surface": pl.Utf8}))


@dataclass(frozen=True)
class NegativeRule:
    """Context words that veto a class; ``lemmas`` limits the veto to matches through those lemmas
    (empty: every lemma of the class)."""

    context: tuple[str, ...]
    lemmas: tuple[str, ...] = ()


# ImageNet-1k's known traps: a lemma that is also a common word for something else. Keyed by wnid so
# the rules follow the class into any vocabulary (imagenet100, imagenet21k, wordnet trees).
NEGATIVE_RULES: dict[str, NegativeRule] = {
    # crane, the bird
    "n02012849": NegativeRule(
        ("construction", "tower", "lifting", "lift", "hydraulic", "excavator", "truck", "site", "building",
         "machine", "machinery", "cargo", "container", "port", "harbor", "harbour", "gantry", "boom", "jib",
         "operator", "rental", "hire", "mobile", "overhead", "tonne", "ton", "tons", "load", "barge", "lego",
         "karate", "kick", "kid", "origami", "paper", "folded", "ichabod", "headless", "horseman", "frasier"),
        ("crane",),
    ),
    # crane, the machine
    "n03126707": NegativeRule(
        ("bird", "birds", "heron", "wading", "flying", "flight", "wings", "wing", "feathers", "sandhill",
         "whooping", "crowned", "wetland", "marsh", "origami", "paper", "migration", "beak", "nest",
         "egret", "stork", "kung", "fu", "karate", "kick", "ichabod", "headless", "horseman", "frasier",
         "sandhill"),
        ("crane",),
    ),
    # ram, the sheep (not memory, not the Dodge truck, not the verb)
    "n02412080": NegativeRule(
        ("memory", "ddr", "ddr2", "ddr3", "ddr4", "ddr5", "gb", "mb", "gigabyte", "laptop", "computer", "pc",
         "dodge", "truck", "pickup", "1500", "2500", "3500", "gaming", "rgb", "module", "dimm", "sodimm",
         "ssd", "cpu", "hdd", "motherboard", "hydraulic", "battering", "upgrade", "kit", "mhz"),
        ("ram",),
    ),
    # submarine: "sub" is also a sandwich, a subwoofer, a subscription, a substitute
    "n04347754": NegativeRule(
        ("sandwich", "sandwiches", "subway", "subwoofer", "woofer", "speaker", "speakers", "amplifier", "amp",
         "bass", "audio", "box", "enclosure", "reddit", "subscribe", "subscriber", "subscription", "title",
         "titles", "subtitles", "subtitle", "english", "teacher", "substitute", "zero", "roll", "deli",
         "hoagie", "footlong", "meatball", "turkey", "chips", "lunch", "italian", "cheesesteak", "ham", "tuna",
         "beatles"),
        ("sub", "submarine"),
    ),
    # bow, the weapon (not the knot, the ship's bow, the violin bow, the gesture)
    "n02879718": NegativeRule(
        ("tie", "ties", "hair", "ribbon", "ribbons", "gift", "gifts", "knot", "satin", "velvet", "headband",
         "dress", "bridal", "wedding", "ship", "boat", "yacht", "stern", "hull", "deck", "violin", "cello",
         "viola", "fiddle", "clip", "clips", "lace", "bowknot", "bowtie", "christmas", "wrapping", "present",
         "sash", "ponytail", "tutu", "window", "legs", "take", "takes", "taking", "took", "cast", "curtain",
         "stage", "audience", "applause"),
        ("bow",),
    ),
    # impala, the antelope (not the Chevrolet, not the band, not the skates)
    "n02422699": NegativeRule(
        ("chevy", "chevrolet", "car", "cars", "sedan", "ss", "engine", "convertible", "coupe", "wheels",
         "tame", "band", "concert", "album", "tour", "skates", "skate", "roller", "lowrider", "v8", "1964",
         "1963", "1965", "1966", "1967", "1959", "1961", "1962"),
        ("impala",),
    ),
    # sorrel, the horse (not the herb)
    "n02389026": NegativeRule(
        ("leaf", "leaves", "soup", "herb", "herbs", "plant", "plants", "garden", "sauce", "salad", "wood",
         "sheep", "french", "seeds", "seed", "recipe", "flowers", "flower", "dock", "edible", "drink"),
        ("sorrel",),
    ),
    # horizontal bar, the gymnastics apparatus (not the chart, the web page element)
    "n03535780": NegativeRule(
        ("chart", "charts", "graph", "graphs", "diagram", "menu", "navigation", "css", "progress", "scroll",
         "scrollbar", "icon", "icons", "vector", "infographic", "ui", "website", "divider", "line", "lines",
         "stripe", "stripes", "template", "slide", "presentation", "data", "statistics"),
        ("horizontal bar",),
    ),
    # ringlet, the butterfly (not the curl of hair)
    "n02277742": NegativeRule(
        ("hair", "curls", "curl", "curly", "hairstyle", "hairstyles", "wig", "wigs", "braid", "braids",
         "extensions", "girl", "woman", "lock", "locks", "blonde", "brunette", "ponytail", "updo", "bride"),
        ("ringlet",),
    ),
    # sidewinder, the rattlesnake (not the missile, the roller coaster, the bike)
    "n01756291": NegativeRule(
        ("missile", "missiles", "aim", "aim 9", "jet", "fighter", "navy", "rocket", "bike", "motorcycle",
         "boat", "guitar", "coaster", "roller", "fishing", "reel", "knife", "launcher"),
        ("sidewinder",),
    ),
    # drake, the male duck (not the rapper, Sir Francis, the equation)
    "n01847000": NegativeRule(
        ("rapper", "music", "singer", "concert", "album", "lyrics", "song", "songs", "ovo", "nfl",
         "university", "bulldogs", "sir", "francis", "nathan", "equation", "hotel", "rihanna", "tour",
         "hip", "hop", "rap", "celebrity", "bell", "passage", "josh", "live", "performing", "performs",
         "toronto", "stage", "donald", "daffy", "cartoon", "tape", "duct", "rubber", "lame", "sitting",
         "dynasty", "commander"),
        ("drake", "duck"),
    ),
    # tiger, the cat (not Tiger Woods, sports teams, tiger balm, the tank, the lily)
    "n02129604": NegativeRule(
        ("woods", "golf", "golfer", "pga", "beer", "balm", "tank", "lily", "lilies", "moth", "prawn",
         "prawns", "shrimp", "eye", "eyes", "stone", "crystal", "bracelet", "detroit", "baseball", "football",
         "jersey", "stadium", "team", "mlb", "ncaa", "lsu", "auburn", "clemson", "princeton", "missouri",
         "cats", "hamilton", "airways", "economy", "mom", "parenting", "onitsuka", "asics", "shoes", "sneakers"),
        ("tiger", "tigers"),
    ),
    # jaguar, the cat (not the car maker, the Jacksonville team, the guitar)
    "n02128925": NegativeRule(
        ("car", "cars", "xf", "xj", "xk", "xe", "xjs", "xjr", "type", "pace", "ftype", "etype", "land", "rover",
         "sedan", "coupe", "convertible", "v8", "v12", "engine", "wheels", "dealer", "dealership", "leaping",
         "jacksonville", "nfl", "fender", "guitar", "os", "mac", "racing", "formula", "motors",
         "interior", "mk", "mkii", "s type", "x type"),
        ("jaguar",),
    ),
    # computer mouse (not the animal, not Mickey)
    "n03793489": NegativeRule(
        ("mickey", "minnie", "disney", "rodent", "rodents", "cheese", "trap", "traps", "mousetrap", "rat",
         "rats", "hamster", "field", "deer", "cartoon", "whiskers", "pet", "pets", "animal", "wildlife",
         "cat", "cats", "kitten", "nest", "tail", "wild", "house", "harvest", "dormouse", "grey", "brown"),
        ("mouse",),
    ),
    # Cardigan, the corgi (not the sweater)
    "n02113186": NegativeRule(
        ("sweater", "sweaters", "knit", "knitted", "knitting", "wool", "cashmere", "button", "buttons",
         "women", "womens", "mens", "cotton", "cardigans", "sleeve", "sleeves", "jumper", "cardi", "fashion",
         "oversized", "crochet", "pattern", "outfit", "mohair", "bay", "wales", "ceredigion", "castle", "cosy",
         "cozy"),
        ("cardigan",),
    ),
    # cardigan, the sweater (not the corgi, not the Welsh town)
    "n02963159": NegativeRule(
        ("corgi", "corgis", "dog", "dogs", "puppy", "puppies", "welsh", "pembroke", "breed", "wales", "bay",
         "show"),
        ("cardigan",),
    ),
    # boxer, the dog (not the fighter, not the shorts)
    "n02108089": NegativeRule(
        ("boxing", "fighter", "fight", "shorts", "brief", "briefs", "underwear", "ring", "gloves", "champion",
         "heavyweight", "ufc", "mma", "rebellion", "punch", "trunks", "mens", "cotton", "engine", "subaru",
         "porsche", "knockout"),
        ("boxer",),
    ),
    # tank, the army vehicle (not fish tanks, tank tops, fuel tanks)
    "n04389033": NegativeRule(
        ("fish", "aquarium", "top", "tops", "water", "fuel", "gas", "propane", "septic", "oxygen", "toilet",
         "tankini", "shark", "storage", "oil", "tanks", "think", "gallon", "gallons", "litre", "liter",
         "sleeveless", "racerback", "womens", "cami", "tee", "fill", "full", "empty", "hot", "steel",
         "reservoir", "pressure", "diving", "scuba", "terrarium", "tropical"),
        ("tank",),
    ),
    # pitcher, the jug (not the baseball player)
    "n03950228": NegativeRule(
        ("baseball", "mlb", "mound", "strikeout", "inning", "innings", "pitch", "pitches", "pitching", "game",
         "yankees", "dodgers", "red", "sox", "cubs", "league", "starting", "relief", "throws", "softball",
         "team", "catcher", "bullpen", "plant"),
        ("pitcher",),
    ),
    # switch, the electric switch (not the Nintendo console)
    "n04372370": NegativeRule(
        ("nintendo", "console", "game", "games", "joy", "con", "joycon", "zelda", "mario", "pokemon", "oled",
         "lite", "gaming", "network", "ethernet", "port", "ports", "gigabit", "managed", "railway", "rail",
         "track", "bait"),
        ("switch",),
    ),
    # nail, the fastener (not finger nails)
    "n03804744": NegativeRule(
        ("polish", "art", "manicure", "gel", "acrylic", "salon", "design", "designs", "finger", "fingers",
         "toe", "toes", "pedicure", "beauty", "nails", "stickers", "lacquer", "file", "tips", "glitter",
         "french", "ombre", "coffin", "almond", "stiletto", "lamp", "uv", "spa"),
        ("nail",),
    ),
    # stole, the wrap (not the past tense of steal)
    "n04325704": NegativeRule(
        ("heart", "show", "thief", "robbery", "police", "money", "base", "bases", "he", "she", "they",
         "who", "someone", "my", "his", "her", "their", "cookie", "cookies", "thunder", "spotlight"),
        ("stole",),
    ),
    # rose hip (not hip hop, the joint)
    "n12620546": NegativeRule(
        ("hop", "joint", "replacement", "pain", "dysplasia", "bone", "surgery", "flexor", "hips", "thigh",
         "waist", "pocket", "bag", "flask", "roof", "music", "dance", "dancer", "artist", "rapper", "style"),
        ("hip",),
    ),
    # kite, the bird (not the toy, kitesurfing)
    "n01608432": NegativeRule(
        ("string", "surfing", "kitesurfing", "kiteboarding", "surf", "beach", "festival", "toy", "kids",
         "paper", "board", "stunt", "diamond", "runner", "colorful", "flying", "seaside",
         "colourful", "rainbow", "wind", "tail"),
        ("kite",),
    ),
    # iron, the smoothing iron (not golf irons, cast iron, the metal)
    "n03584829": NegativeRule(
        ("golf", "club", "clubs", "wrought", "cast", "ore", "maiden", "gate", "gates", "fence", "fences",
         "railing", "railings", "bars", "bar", "flat", "hair", "curling", "straightener", "man", "throne",
         "pumping", "skillet", "pan", "metal", "steel", "age", "horse", "lung", "deficiency", "supplement",
         "sword", "cross", "chef", "oxide", "rust", "rusty", "bed", "bridge", "work", "works", "door"),
        ("iron",),
    ),
    # dock, the pier (not a docking station)
    "n03216828": NegativeRule(
        ("docking", "station", "usb", "charging", "charger", "laptop", "iphone", "ipad", "hub", "thunderbolt",
         "hdmi", "macbook", "dell", "switch", "sorrel"),
        ("dock",),
    ),
    # bee (not a spelling bee)
    "n02206856": NegativeRule(("spelling", "quilting", "sewing"), ("bee",)),
    # hog (not the motorcycle)
    "n02395406": NegativeRule(
        ("harley", "davidson", "motorcycle", "motorcycles", "bike", "biker", "road", "ground", "hog wild",
         "warthog", "roast", "roasted", "whole", "bbq", "barbecue"),
        ("hog",),
    ),
    # web site: "site" alone is almost always a place
    "n06359193": NegativeRule(
        ("construction", "camping", "campsite", "building", "archaeological", "archeological", "historic",
         "heritage", "unesco", "excavation", "burial", "dig", "landfill", "job", "work", "crash", "test",
         "testing", "nuclear", "drilling", "mining", "mine", "ruins", "memorial", "battle", "sacred",
         "holy", "camp", "caravan", "rv", "pitch", "tent", "plot", "development"),
        ("site",),
    ),
    # chest, the box (not the body part)
    "n03014705": NegativeRule(
        ("hair", "pain", "tattoo", "tattoos", "muscles", "muscle", "workout", "press", "ray", "x", "xray",
         "pecs", "abs", "man", "mens", "shirtless", "naked", "bare", "injury", "infection", "cold"),
        ("chest",),
    ),
    # chain, the metal chain (not store chains, block chains)
    "n02999410": NegativeRule(
        ("store", "stores", "restaurant", "restaurants", "hotel", "hotels", "supply", "food", "block",
         "blockchain", "retail", "fast", "grocery", "coffee", "value", "reaction", "mountain", "island",
         "islands", "smokers", "smoker", "command", "daisy", "email", "letter"),
        ("chain",),
    ),
    # cricket, the insect (not the sport)
    "n02229544": NegativeRule(
        ("match", "bat", "bats", "team", "lords", "lord", "wicket", "wickets", "test", "ipl", "odi", "t20",
         "innings", "bowler", "bowling", "batsman", "batting", "ground", "stadium", "club", "cup", "india",
         "england", "australia", "pakistan", "player", "players", "jersey", "ball", "pitch", "series",
         "captain", "century", "fans", "score", "wireless", "phone"),
        ("cricket",),
    ),
    # American robin (not Robin Williams, Batman's Robin, Robin Hood)
    "n01558993": NegativeRule(
        ("williams", "batman", "hood", "tribute", "actor", "comedian", "christopher", "wright", "thicke",
         "wonder", "reliant", "round", "costume", "sherwood", "marian"),
        ("robin",),
    ),
    # harp, the instrument (not the harp seal)
    "n03495258": NegativeRule(("seal", "seals", "pup", "pups", "ice", "arctic", "whitecoat"), ("harp",)),
    # jean (jeans): not the French first name
    "n03594734": NegativeRule(
        ("luc", "paul", "claude", "michel", "baptiste", "pierre", "marie", "jacques", "francois", "godard",
         "louis", "marc", "philippe", "grey", "seberg", "harlow", "valjean", "genie", "billie"),
        ("jean",),
    ),
    # airplane wing (not chicken wings, a building's wing, a political wing)
    "n04592741": NegativeRule(
        ("buffalo", "chicken", "hot", "ranch", "sauce", "bbq", "spicy", "fried", "west", "east", "north",
         "south", "left", "right", "hospital", "museum", "building", "palace", "angel", "angels", "bird",
         "birds", "butterfly", "fairy", "chun", "wingman", "mirror", "chair", "tips", "dressing"),
        ("wing",),
    ),
    # throne, the chair (not Game of Thrones)
    "n04429376": NegativeRule(
        ("game", "season", "episode", "episodes", "stark", "lannister", "hbo", "targaryen", "khaleesi",
         "finale", "dragons", "westeros", "snow", "iron"),
        ("throne",),
    ),
    # rocking chair's "rocker" (not the musician, the switch, the engine part)
    "n04099969": NegativeRule(
        ("punk", "rock", "rockers", "band", "music", "guitar", "mohawk", "star", "metal", "concert", "switch",
         "arm", "arms", "engine", "valve", "cover", "covers", "panel", "panels", "boot", "boots", "shoe",
         "shoes", "sole", "skate", "skateboard", "skateboards", "camber", "hair"),
        ("rocker",),
    ),
    # vacuum cleaner's "vacuum" (not vacuum-sealed, vacuum flasks, physics)
    "n04517823": NegativeRule(
        ("sealed", "sealer", "seal", "packed", "packing", "pump", "pumps", "tube", "tubes", "chamber", "flask",
         "flasks", "insulated", "bottle", "cup", "mug", "tumbler", "bag", "bags", "storage", "forming", "gauge",
         "physics", "space", "pressure", "brake", "hose", "fitting", "valve", "cooking", "sous", "vide"),
        ("vacuum",),
    ),
    # coyote (not Wile E. Coyote, Coyote Ugly)
    "n02114855": NegativeRule(
        ("wile", "cartoon", "looney", "tunes", "roadrunner", "road", "runner", "acme", "ugly", "bar", "peterson"),
        ("coyote",),
    ),
    # fishing reel (not a highlight reel, an Instagram reel)
    "n04067472": NegativeRule(
        ("highlight", "highlights", "instagram", "reels", "video", "videos", "film", "showreel", "demo",
         "season", "tiktok", "movie", "blooper", "bloopers", "clip", "clips", "hose", "tape", "slot", "slots",
         "dance", "scottish", "ceilidh"),
        ("reel",),
    ),
    # pickup truck's "pickup" (not pickup lines, guitar pickups, store pickup)
    "n03930630": NegativeRule(
        ("lines", "line", "artist", "artists", "guitar", "guitars", "pickups", "humbucker", "humbuckers",
         "tonearm", "needle", "cartridge", "basketball", "order", "orders", "curbside", "store", "point",
         "location", "service", "schedule", "delivery", "laundry", "bass", "coil", "magnetic"),
        ("pickup",),
    ),
    # goose (not goose bumps, Grey Goose, Canada Goose jackets, Mother Goose)
    "n01855672": NegativeRule(
        ("bumps", "bump", "pimples", "flesh", "vodka", "jacket", "jackets", "parka", "parkas", "coat", "coats",
         "chase", "mother", "nursery", "rhymes", "top", "gun", "maverick", "loose", "silly", "sneakers"),
        ("goose",),
    ),
    # bell (not Taco Bell, bell peppers, bell-bottoms)
    "n03017168": NegativeRule(
        ("taco", "tacos", "burrito", "drive", "thru", "pepper", "peppers", "jar", "jars", "curve", "bottom",
         "bottoms", "sleeve", "sleeves", "tinker", "kristen", "alexander", "graham", "canada", "atlantic",
         "boy", "hop", "hops", "pants", "skirt", "tent", "dumbbell"),
        ("bell",),
    ),
    # Chihuahua, the dog (not the Mexican state and city)
    "n02085620": NegativeRule(
        ("mexico", "downtown", "city", "state", "ciudad", "juarez", "desert", "cathedral", "airport",
         "university", "hotel", "tour", "travel", "map"),
        ("chihuahua",),
    ),
}

# Lemmas too generic to count as a mention on their own in curate mode (their longer lemmas still
# match): "light" (lighter) is nearly always the adjective or a lamp.
BLOCKED_LEMMAS: dict[str, tuple[str, ...]] = {
    "n03666591": ("light",),
    # harmonica's "harp" (a mouth harp) is nearly always the harp
    "n03494278": ("harp",),
}

# Surface forms never matched in curate mode: single characters and English function words. Large
# WordNet vocabularies hold them as lemmas ("A" for vitamin A, "who" for the World Health
# Organization, "it", "may"), and as words they are almost never the concept.
STOP_FORMS = frozenset(
    """a an the and or but nor if then than so as at by for from in into of off on onto out over to up
    upon with within without about above after against along among around before behind below
    beneath beside between beyond during except inside near past since through till toward under
    until via i me my mine we us our ours you your yours he him his she her hers it its they them
    their theirs this that these those who whom whose which what when where why how all any both
    each few more most other some such no not only own same too very can will just do does did done
    be am is are was were been being have has had having may might must shall should would could
    one ones s t d ll m o re ve y""".split()
)

# ---------------------------------------------------------------------------------------------
# normalisation

_HTML_TAG = r"<[A-Za-z/!][^<>]*>"
_ENTITIES = {
    "&amp;": "&", "&quot;": '"', "&apos;": "'", "&#39;": "'", "&#039;": "'", "&lt;": "<", "&gt;": ">",
    "&nbsp;": " ", "&#8217;": "'", "&#8216;": "'", "&rsquo;": "'", "&lsquo;": "'", "&#x27;": "'",
    "&#8220;": '"', "&#8221;": '"', "&ldquo;": '"', "&rdquo;": '"', "&#8211;": "-", "&#8212;": "-",
    "&ndash;": "-", "&mdash;": "-", "&hellip;": " ", "&#8230;": " ", "&#x2F;": "/", "&#47;": "/",
}
_OTHER_ENTITY = r"&#?[A-Za-z0-9]{1,8};"
# case folds that plain lower-casing misses (str.casefold does them)
_CASEFOLD = {"ß": "ss", "ẞ": "ss", "ς": "σ", "ſ": "s", "ﬅ": "st", "ﬆ": "st"}


# ASCII bytes: upper case folds to lower, letters and digits stay, everything else is a separator
_BYTE_TABLE = np.arange(256, dtype=np.uint8)
_BYTE_TABLE[:128] = 32
_BYTE_TABLE[ord("0") : ord("9") + 1] = np.arange(ord("0"), ord("9") + 1)
_BYTE_TABLE[ord("a") : ord("z") + 1] = np.arange(ord("a"), ord("z") + 1)
_BYTE_TABLE[ord("A") : ord("Z") + 1] = np.arange(ord("a"), ord("z") + 1)
_SPACE = np.uint8(32)
_BYTE_TABLE_BYTES = _BYTE_TABLE.tobytes()
# bytes that only polars' kernels handle: non-ASCII (bit 1: Unicode path), '<' and '&' (bit 2: HTML)
_SPECIAL_BYTES = np.zeros(256, dtype=np.uint8)
_SPECIAL_BYTES[128:] = 1
_SPECIAL_BYTES[[ord("<"), ord("&")]] = 2


def _html(s: pl.Expr) -> pl.Expr:
    s = s.str.replace_all(_HTML_TAG, " ")
    s = s.str.replace_many(list(_ENTITIES), list(_ENTITIES.values()))
    return s.str.replace_all(_OTHER_ENTITY, " ")


def _unicode_path(s: pl.Expr) -> pl.Expr:
    s = s.str.normalize("NFKC").str.to_lowercase()
    s = s.str.replace_many(list(_CASEFOLD), list(_CASEFOLD.values()))
    # only non-ASCII separators here: the byte table that always follows turns every ASCII
    # character that is not a letter or digit into a space (and is four times cheaper than this)
    return s.str.replace_all(r"[^\p{L}\p{N}\p{M}\x00-\x7F]+", " ")


def _prepared(captions: pl.Series) -> pl.Series:
    """Captions with HTML decoded and non-ASCII rows Unicode-normalised (polars kernels, applied
    only to the rows that need them)."""
    s = captions if captions.dtype == pl.Utf8 else captions.cast(pl.Utf8)
    if s.null_count():
        s = s.fill_null("")
    html = s.str.contains_any(["<", "&"]).arg_true()
    if len(html):
        s = s.clone()  # scatter writes in place: never into the caller's series
        s = s.scatter(html, s[html].to_frame("c").select(_html(pl.col("c"))).to_series())
    non_ascii = (s.str.len_bytes() != s.str.len_chars()).arg_true()
    if len(non_ascii):
        s = s.clone().scatter(non_ascii, s[non_ascii].to_frame("c").select(_unicode_path(pl.col("c"))).to_series())
    return s


def normalised_buffer(captions: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Every caption normalised, laid end to end in one byte buffer: row i is
    ``data[offsets[i]:offsets[i+1]]``, `` word word `` with exactly one space between words and one
    pad each side (an empty caption is a single space), so neighbouring rows meet in two spaces
    and no pattern can span two rows.

    With numba installed, two compiled loops do the work without the GIL: one flags the rows that
    need polars' HTML and Unicode kernels, one applies the byte table and squeezes spaces in a
    single pass. Without numba, the same result comes from :func:`_normalised_buffer_numpy`.
    """
    kernels = _kernels() if COMPILED else None
    if kernels is None:
        return _normalised_buffer_numpy(captions)
    squeeze_rows, splice_rows = kernels
    s = captions if captions.dtype == pl.Utf8 else captions.cast(pl.Utf8)
    if s.null_count():
        s = s.fill_null("")
    out, out_offsets, flags = _squeeze(squeeze_rows, s)
    special = np.flatnonzero(flags)
    if len(special) == 0:
        return out, out_offsets
    # the few rows with HTML or non-ASCII text: polars' kernels, the same loop, then spliced in
    kinds = flags[special]
    sub = s.gather(special)
    html = np.flatnonzero(kinds & 2)
    if len(html):
        sub = sub.scatter(html, sub.gather(html).to_frame("c").select(_html(pl.col("c"))).to_series())
    non_ascii = np.flatnonzero(kinds & 1)
    if len(non_ascii):
        sub = sub.scatter(non_ascii, sub[non_ascii].to_frame("c").select(_unicode_path(pl.col("c"))).to_series())
    sub_out, sub_offsets, _ = _squeeze(squeeze_rows, sub)
    final = np.empty(len(out) + len(sub_out), dtype=np.uint8)
    final_offsets = np.empty_like(out_offsets)
    splice_rows(out, out_offsets, special, sub_out, sub_offsets, final, final_offsets)
    return final[: final_offsets[-1]], final_offsets


def _squeeze(squeeze_rows, s: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data, offsets = _buffer(s)
    n = len(offsets) - 1
    out = np.empty(int(offsets[-1] - offsets[0]) + 2 * n + 1, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    flags = np.empty(n, dtype=np.uint8)
    squeeze_rows(data, offsets, _BYTE_TABLE, _SPECIAL_BYTES, out, out_offsets, flags)
    return out[: out_offsets[-1]], out_offsets, flags


def _squeeze_rows(data, offsets, table, special, out, out_offsets, flags):
    """Byte table and space squeeze in one pass, row by row (`` word word ``, see
    :func:`normalised_buffer`); ``flags[i]`` ORs the ``special`` marks of row i's bytes.

    Branch-free: every byte is written, and the write position advances unless the byte is a
    space after a space."""
    k = 0
    for i in range(len(offsets) - 1):
        out_offsets[i] = k
        out[k] = 32
        k += 1
        last = 32
        f = 0
        for j in range(offsets[i], offsets[i + 1]):
            b = data[j]
            c = table[b]
            f |= special[b]
            out[k] = c
            k += (c != 32) | (last != 32)
            last = c
        if last != 32:
            out[k] = 32
            k += 1
        flags[i] = f
    out_offsets[len(offsets) - 1] = k


def _splice_rows(out, out_offsets, rows, sub, sub_offsets, final, final_offsets):
    """``final``: the rows of ``out``, except rows[t] (ascending), which come from ``sub``'s row t.

    The untouched rows between two replaced ones are one contiguous block of ``out``: copied as a
    slice (memcpy speed) and their offsets shifted by one constant, not byte by byte."""
    n = len(out_offsets) - 1
    k = 0
    i = 0
    for t in range(len(rows) + 1):
        stop = rows[t] if t < len(rows) else n
        a = out_offsets[i]
        b = out_offsets[stop]
        shift = k - a
        for r in range(i, stop):
            final_offsets[r] = out_offsets[r] + shift
        final[k : k + (b - a)] = out[a:b]
        k += b - a
        if t < len(rows):
            final_offsets[stop] = k
            c = sub_offsets[t]
            d = sub_offsets[t + 1]
            final[k : k + (d - c)] = sub[c:d]
            k += d - c
            i = stop + 1
    final_offsets[n] = k


# False forces the numpy and Aho–Corasick paths even where numba is installed (the benchmark's
# side-by-side row; the results are the same)
COMPILED = True


@functools.lru_cache(maxsize=1)
def _kernels():
    """The compiled loops of :func:`normalised_buffer`, or None without numba (an optional
    speed-up: the numpy path gives the same bytes)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return None
    return _jit(_squeeze_rows), _jit(_splice_rows)


def _jit(func):
    """``func`` compiled without the GIL (polars runs batches on several threads), cached on disk
    where the package directory or numba's user cache can be written, else compiled per process."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True, boundscheck=False)(func)
    except RuntimeError:  # no writable cache location
        return numba.njit(nogil=True, boundscheck=False)(func)


@functools.lru_cache(maxsize=1)
def _word_kernels():
    """The compiled word-table build and search of :class:`WordTable`, or None without numba."""
    if _kernels() is None:
        return None
    _compile_load_u64()
    return _jit(_build_table), _jit(_word_find)


def _load_u64(data, q):
    """The 8 bytes ``data[q:q+8]`` as one little-endian integer (compiled: one unaligned load)."""
    return np.uint64(int.from_bytes(data[q : q + 8].tobytes(), "little"))


@functools.lru_cache(maxsize=1)
def _compile_load_u64() -> None:
    """Teach numba :func:`_load_u64` as a single unaligned load: assembled from 8 byte loads it
    sits on the word-to-word dependency chain of :func:`_word_find` and costs a third of it."""
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic, overload

    @intrinsic
    def load(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
            return builder.load(ptr, align=1)

        return types.uint64(arr, idx), codegen

    @overload(_load_u64)
    def _impl(data, q):
        return lambda data, q: load(data, q)


_HASH_SEED = np.uint64(0xCBF29CE484222325)
# hashed 8 bytes at a time (one multiply per word of up to 7 bytes): an odd multiplier with every
# byte of the product depending on every byte of the chunk
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_SPACES8 = np.uint64(0x2020202020202020)
_ONES8 = np.uint64(0x0101010101010101)
_HIGHS8 = np.uint64(0x8080808080808080)
# (1 << 8k) * _BYTE_INDEX >> 56 == k for k in 0..7: the index of the lowest marked byte
_BYTE_INDEX = np.uint64(0x0001020304050607)
# a slot is (hash, value): value 0 is an empty slot, else bits 0-39 hold the form's index + 2 (1: no
# form has this hash, only a prefix does) and bit 40 marks the hash of some form's leading words;
# key and value side by side, so a lookup touches one cache line
_PID_MASK = np.uint64((1 << 40) - 1)
_PREFIX_BIT = np.uint64(1 << 40)


def _build_table(forms, form_offsets, table, bloom):
    """Open addressing on a 64-bit hash: every form's hash -> its index, and the hash of each of its
    leading word runs ("german" of "german shepherd") marked as a prefix. False when two different
    forms share a hash (the caller then falls back to the automaton).

    A word hashes as :func:`_word_find` reads it: little-endian chunks of 8 bytes, the last one
    holding the remaining 0-7 bytes (an empty chunk when the length is a multiple of 8)."""
    mask = len(table) - 1
    for i in range(len(form_offsets) - 1):
        h = _HASH_SEED
        end = form_offsets[i + 1]
        j = form_offsets[i]
        while True:
            we = j
            while we < end and forms[we] != 32:
                we += 1
            c = j
            while True:
                n = min(8, we - c)
                w = np.uint64(0)
                for t in range(n):
                    w |= np.uint64(forms[c + t]) << np.uint64(8 * t)
                h = (h ^ w) * _HASH_MUL
                if n < 8:
                    break
                c += 8
            h ^= h >> np.uint64(32)
            is_prefix = we < end
            slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
            while table[slot, 1] != 0 and table[slot, 0] != h:
                slot = (slot + 1) & mask
            if table[slot, 1] == 0:
                table[slot, 0] = h
                table[slot, 1] = 1
                bit = (h >> np.uint64(37)) & np.uint64(len(bloom) * 64 - 1)
                bloom[bit >> np.uint64(6)] |= np.uint64(1) << (bit & np.uint64(63))
            if is_prefix:
                table[slot, 1] |= _PREFIX_BIT
            else:
                have = table[slot, 1] & _PID_MASK
                if have >= 2 and have != i + 2:
                    return False
                table[slot, 1] = (table[slot, 1] & _PREFIX_BIT) | np.uint64(i + 2)
                break
            h = (h ^ np.uint64(32)) * _HASH_MUL
            j = we + 1
    return True


def _word_find(data, offsets, table, bloom, forms, form_offsets, out_pid, out_start, out_end, out_row):
    """Every occurrence of every form as whole words in the normalised buffer (laid out as
    :func:`normalised_buffer` does): what the padded-pattern automaton reports with overlapping
    matches, as (form, start, end, row) with start/end on the padding spaces, ordered by end. Hashes each word
    once (8 bytes at a time), and the words after it only while they extend some form's leading words; every hit is
    checked byte for byte. Returns the number of hits (written up to the arrays' length)."""
    mask = len(table) - 1
    bloom_mask = np.uint64(len(bloom) * 64 - 1)
    cap = len(out_pid)
    size = len(data)
    m = 0
    for r in range(len(offsets) - 1):
        b = offsets[r + 1]
        p = offsets[r] + 1
        row_first = m
        while p < b:
            h = _HASH_SEED
            q = p
            first_end = -1
            while True:
                while True:  # the word at q, 8 bytes at a time (see _build_table)
                    if q + 8 <= size:
                        w = _load_u64(data, q)
                    else:  # the buffer's last bytes: pad with spaces, never read past it
                        w = np.uint64(0)
                        for t in range(8):
                            c = data[q + t] if q + t < size else 32
                            w |= np.uint64(c) << np.uint64(8 * t)
                    x = w ^ _SPACES8
                    marks = (x - _ONES8) & ~x & _HIGHS8  # exact for the lowest space byte
                    if marks == 0:
                        h = (h ^ w) * _HASH_MUL
                        q += 8
                        continue
                    below = ((marks & (~marks + np.uint64(1))) >> np.uint64(7)) - np.uint64(1)
                    h = (h ^ (w & below)) * _HASH_MUL
                    q += np.int64(((below + np.uint64(1)) * _BYTE_INDEX) >> np.uint64(56))
                    break
                h ^= h >> np.uint64(32)
                if first_end < 0:
                    first_end = q
                bit = (h >> np.uint64(37)) & bloom_mask
                if (bloom[bit >> np.uint64(6)] >> (bit & np.uint64(63))) & np.uint64(1) == 0:
                    break  # most words: no form or prefix has this hash, known from a small bitmap
                slot = np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))
                while table[slot, 1] != 0 and table[slot, 0] != h:
                    slot = (slot + 1) & mask
                value = table[slot, 1]
                if value == 0:
                    break
                pid = np.int64(value & _PID_MASK) - 2
                if pid >= 0:
                    fa = form_offsets[pid]
                    same = form_offsets[pid + 1] - fa == q - p
                    if same:
                        for t in range(q - p):
                            if forms[fa + t] != data[p + t]:
                                same = False
                                break
                    if same:
                        if m < cap:
                            # insert in end order (the automaton's order): a row's few hits only
                            # ever move past the ones before them in the same row
                            i = m
                            while i > row_first and out_end[i - 1] > q + 1:
                                out_pid[i] = out_pid[i - 1]
                                out_start[i] = out_start[i - 1]
                                out_end[i] = out_end[i - 1]
                                out_row[i] = r
                                i -= 1
                            out_pid[i] = pid
                            out_start[i] = p - 1
                            out_end[i] = q + 1
                            out_row[i] = r
                        m += 1
                if (value & _PREFIX_BIT) == 0 or q + 1 >= b:
                    break
                h = (h ^ np.uint64(32)) * _HASH_MUL
                q += 1
            p = first_end + 1
    return m


class WordTable:
    """The surface forms as a hash table of whole-word sequences (numba): the fast equivalent of
    the padded-pattern automaton on buffers laid out by :func:`normalised_buffer`."""

    def __init__(self, patterns: list[str]) -> None:
        build, self._find = _word_kernels()
        cores = [p.strip().encode("utf-8") for p in patterns]
        self.forms = np.frombuffer(b"".join(cores), dtype=np.uint8) if cores else np.zeros(0, dtype=np.uint8)
        self.form_offsets = np.zeros(len(cores) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in cores], out=self.form_offsets[1:])
        entries = len(cores) + int((self.forms == 32).sum())
        self.table = np.zeros((1 << max(4, int(2 * entries).bit_length()), 2), dtype=np.uint64)
        # one bit per hash, 8+ bits per entry: small enough to stay in cache, where the table is not
        self.bloom = np.zeros(1 << max(0, int(8 * entries).bit_length() - 6), dtype=np.uint64)
        self.ok = bool(build(self.forms, self.form_offsets, self.table, self.bloom))
        self._cap = 1024  # hits per row seen so far, to size the output once

    def find(self, data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cap = int(len(offsets) * max(1.0, self._cap / 1024)) + 1024
        while True:
            out = [np.empty(cap, dtype=np.int64) for _ in range(4)]
            m = self._find(data, offsets, self.table, self.bloom, self.forms, self.form_offsets, *out)
            if m <= cap:
                self._cap = max(self._cap, int(1024 * 1.25 * m / len(offsets)))
                return tuple(a[:m] for a in out)  # pid, start, end, row
            cap = int(m * 1.25) + 1024


def _normalised_buffer_numpy(captions: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normalised_buffer` in numpy: a byte table (lower case, separators) and one vectorised
    squeeze of repeated spaces over the whole batch at once."""
    data, offsets = _buffer(_prepared(captions))
    n = len(offsets) - 1
    # bytes.translate: a byte table at memory speed, several times faster than numpy's fancy index
    body = np.frombuffer(data[offsets[0] : offsets[-1]].tobytes().translate(_BYTE_TABLE_BYTES), dtype=np.uint8)
    # a 0 byte (which no text byte maps to) opens every row, a space closes it: after the squeeze
    # below each row is "\0word word " and the 0 turns into the row's leading pad
    where = np.concatenate(([0], np.repeat(offsets[1:] - offsets[0], 2)))
    marks = np.concatenate(([0], np.tile(np.array([32, 0], dtype=np.uint8), n))).astype(np.uint8)
    data = np.insert(body, where, marks)
    space = data == _SPACE
    # keep the first space of a run, none right after a row's 0: leading runs vanish, inner runs
    # become one space, and the closing space we added stays as the trailing pad
    drop = space.copy()
    drop[1:] &= space[:-1] | (data[:-1] == 0)
    drop[0] = False
    data = data[~drop]
    z = np.flatnonzero(data == 0)  # n + 1: each row's start, then the end of the buffer
    data[z] = _SPACE
    return data, z.astype(np.int64)


def normalise(captions: pl.Series) -> pl.Series:
    """Normalised, space-padded text (`` word word ``) for each string; null or empty becomes ``" "``.

    The one normalisation for captions and lemmas alike (:func:`normalised_buffer` as strings).

    >>> normalise(pl.Series(["The Tiger&#39;s <b>Bow-Tie</b>!", "ＣＡＴ"])).to_list()
    [' the tiger s bow tie ', ' cat ']
    """
    data, offsets = normalised_buffer(captions)
    arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))
    return pl.Series(captions.name, arr, dtype=pl.Utf8)


def normalise_text(text: str) -> str:
    """:func:`normalise` for one string, without the padding."""
    return normalise(pl.Series([text], dtype=pl.Utf8)).item().strip()


def normalise_many(texts: list[str]) -> dict[str, str]:
    """:func:`normalise` for many strings at once, unpadded: text -> normalised."""
    uniq = sorted(set(texts))
    return dict(zip(uniq, (x.strip() for x in normalise(pl.Series(uniq, dtype=pl.Utf8)).to_list())))


# ---------------------------------------------------------------------------------------------
# surface forms

_SIBILANT = ("s", "x", "z", "ch", "sh")
_VOWELS = set("aeiou")
_QUALIFIER = re.compile(r"\s*\([^)]*\)")


def regular_plural(word: str) -> str:
    if word.endswith(_SIBILANT):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


def _plurals(phrase: str, irregular: dict[str, list[str]]) -> set[str]:
    words = phrase.split()
    head, last = words[:-1], words[-1]
    out = set(irregular.get(phrase, ()))
    if last.isalpha() and len(last) > 1:
        plurals = {regular_plural(last)}
        plurals.update(p for p in irregular.get(last, ()) if " " not in p)
        out.update(" ".join([*head, p]) for p in plurals)
    return out


def surface_forms(lemma_norm: str, irregular: dict[str, list[str]]) -> list[str]:
    """Every surface form of one *normalised* lemma (words separated by single spaces), sorted:
    the lemma, its plurals (regular, and irregular from ``irregular``, on the last word), a
    possessive's run-together spelling ("potter s wheel" -> "potters wheel") and the joined spelling
    of multi-word forms ("bow tie" -> "bowtie")."""
    if not lemma_norm.split():
        return []
    bases = {lemma_norm}
    if " s " in f"{lemma_norm} "[1:]:
        bases.add(re.sub(r"(?<=\w) s(?= |$)", "s", lemma_norm))
    forms = set(bases)
    for base in bases:
        forms.update(_plurals(base, irregular))
    for f in list(forms):
        words = f.split()
        if len(words) > 1 and all(w.isalnum() for w in words):
            joined = "".join(words)
            if len(joined) >= 5:
                forms.add(joined)
    return sorted(forms)


@functools.lru_cache(maxsize=1)
def _irregular_normalised() -> dict[str, list[str]]:
    from curate.wordnet import plural_exceptions

    table = plural_exceptions()
    keys = list(table)
    norm_keys = [k.strip() for k in normalise(pl.Series(keys, dtype=pl.Utf8)).to_list()]
    flat = sorted({p for v in table.values() for p in v})
    norm_flat = dict(zip(flat, (p.strip() for p in normalise(pl.Series(flat, dtype=pl.Utf8)).to_list())))
    out: dict[str, list[str]] = {}
    for k, nk in zip(keys, norm_keys):
        # noun.exc also lists regular forms and the base itself; keep what differs
        plurals = [norm_flat[p] for p in table[k] if norm_flat[p] and norm_flat[p] != nk]
        if plurals:
            out.setdefault(nk, [])
            out[nk] = sorted(set(out[nk]) | set(plurals))
    return out


# ---------------------------------------------------------------------------------------------
# the compiled matcher


@dataclass
class Mentions:
    """Accepted mentions of one batch, one entry per (mention, class), ordered by row then position."""

    row: np.ndarray  # int64, index into the batch
    label: np.ndarray  # int32
    start: np.ndarray  # int64, byte offset of the word in the normalised, unpadded caption
    end: np.ndarray  # int64
    pattern: np.ndarray  # int64, index into Matcher.patterns


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    vals = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(ptr[-1]))
    return ptr, vals


def _expand(ptr: np.ndarray, vals: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each key k, the entries vals[ptr[k]:ptr[k+1]]: (position of k in keys, value)."""
    counts = ptr[keys + 1] - ptr[keys]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    which = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    first = np.repeat(ptr[keys] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return which, vals[first + np.arange(total, dtype=np.int64)]


def _buffer(norm: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The normalised strings end to end in one byte buffer, and their int64 offsets."""
    arr = norm.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, dtype=np.uint8)
    return data, offsets


def _find(automaton, data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All (overlapping) matches of ``automaton`` in the buffer: pattern, start, end, row."""
    lo, hi = int(offsets[0]), int(offsets[-1])
    found = automaton.find_matches_as_indexes(data[lo:hi], overlapping=True) if hi > lo else []
    if not found:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z
    # fromiter over the flattened tuples: about twice as fast as np.array on a list of tuples
    hits = np.fromiter(itertools.chain.from_iterable(found), dtype=np.int64, count=3 * len(found)).reshape(-1, 3)
    pid, start, end = hits[:, 0], hits[:, 1] + lo, hits[:, 2] + lo
    row = np.searchsorted(offsets, start, side="right") - 1
    inside = end <= offsets[row + 1]  # never false for space-padded rows; a guard
    if not inside.all():
        pid, start, end, row = pid[inside], start[inside], end[inside], row[inside]
    return pid, start, end, row


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    keys = np.sort(keys)  # unique keys: no order among equals to keep
    if len(keys) < 2:
        return keys
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]


def _automaton(patterns: list[str]):
    import ahocorasick_rs

    # a full DFA searches fastest while it stays small; past ~20k patterns (imagenet21k) it costs
    # seconds to build and searches no faster than the contiguous NFA
    impl = ahocorasick_rs.Implementation.DFA if len(patterns) < 20_000 else ahocorasick_rs.Implementation.ContiguousNFA
    return ahocorasick_rs.BytesAhoCorasick(
        [p.encode("utf-8") for p in patterns], matchkind=ahocorasick_rs.MatchKind.Standard, implementation=impl
    )


@dataclass
class Matcher:
    """A vocabulary compiled for matching: patterns, the automata and the tables behind them.

    Surface forms and context words live in two automata: context words are looked for only in
    the few captions whose mentions some rule could veto, so common context words ("hair", "car")
    cost nothing on the rest.
    """

    n_classes: int
    patterns: list[str]  # " form " (padded), one per distinct surface form
    sense_label: np.ndarray  # int32: a sense is one (surface form, class) pair
    pat_sense_ptr: np.ndarray
    pat_sense: np.ndarray
    context: list[str]  # " word " (padded) context words
    ctx_veto_ptr: np.ndarray
    ctx_veto: np.ndarray  # senses vetoed when this context word occurs in the caption
    surfaces: pl.DataFrame = field(repr=False)  # label, lemma, surface: what can match, for inspection
    _automata: list = field(default_factory=list, repr=False)

    @property
    def automaton(self):
        """The surface-form matcher: a :class:`WordTable` with numba, else the Aho–Corasick
        automaton of the padded patterns (the context automaton is built alongside)."""
        if not self._automata:
            table = WordTable(self.patterns) if _word_kernels() is not None else None
            forms = table if table is not None and table.ok else _automaton(self.patterns)
            self._automata.extend([forms, _automaton(self.context) if self.context else None])
        return self._automata[0]

    def warm_up(self) -> None:
        """Build the automata and run every compiled loop once on a tiny batch (numba compiles,
        or loads its cache, on the first call)."""
        _ = self.automaton
        self.mentions(pl.Series(["Warm-up: a café &amp; <b>crane</b>", "", None], dtype=pl.Utf8))

    def _find_forms(self, data: np.ndarray, offsets: np.ndarray):
        forms = self.automaton
        if not isinstance(forms, WordTable):
            return _find(forms, data, offsets)
        if COMPILED:
            return forms.find(data, offsets)
        if len(self._automata) < 3:
            self._automata.append(_automaton(self.patterns))
        return _find(self._automata[2], data, offsets)

    def __post_init__(self) -> None:
        self._vetoable = np.zeros(len(self.sense_label), dtype=bool)
        self._vetoable[self.ctx_veto] = True

    def mentions(self, captions: pl.Series) -> Mentions:
        """Every accepted mention in a batch of raw captions (after longest-match and vetoes)."""
        data, offsets = normalised_buffer(captions)
        return self._mentions(data, offsets)

    def _mentions(self, data: np.ndarray, offsets: np.ndarray) -> Mentions:
        pid, start, end, row = self._find_forms(data, offsets)
        keep = _longest(start, end)
        pid, start, end, row = pid[keep], start[keep], end[keep], row[keep]
        w, sense = _expand(self.pat_sense_ptr, self.pat_sense, pid)
        row_w = row[w]

        vetoable = self._vetoable[sense] if len(sense) else np.zeros(0, dtype=bool)
        if vetoable.any():
            rows_v = _sorted_unique(row_w[vetoable])
            # the context automaton runs over just those captions, laid end to end
            lengths = offsets[rows_v + 1] - offsets[rows_v]
            sub_offsets = np.concatenate(([0], np.cumsum(lengths)))
            gather = np.repeat(offsets[rows_v] - sub_offsets[:-1], lengths) + np.arange(sub_offsets[-1])
            cp, _, _, crow = _find(self._automata[1], data[gather], sub_offsets)
            cw, csense = _expand(self.ctx_veto_ptr, self.ctx_veto, cp)
            if len(cw):
                n_senses = np.int64(len(self.sense_label))
                veto_keys = _sorted_unique(rows_v[crow[cw]] * n_senses + csense)
                # only vetoable senses can be vetoed: look up just those mentions
                at = np.flatnonzero(vetoable)
                keys = row_w[at] * n_senses + sense[at]
                pos = np.minimum(np.searchsorted(veto_keys, keys), len(veto_keys) - 1)
                ok = np.ones(len(sense), dtype=bool)
                ok[at] = veto_keys[pos] != keys
                w, sense, row_w = w[ok], sense[ok], row_w[ok]
        base = offsets[row_w] + 1  # the padding space
        return Mentions(
            row=row_w,
            label=self.sense_label[sense],
            start=start[w] + 1 - base,
            end=end[w] - 1 - base,
            pattern=pid[w],
        )

    def labels(self, captions: pl.Series, *, policy: str = "all") -> pl.Series:
        return labels_from_mentions(self.mentions(captions), len(captions), self.n_classes, policy=policy)


def _longest(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices of the mentions that survive longest-match-wins (see :func:`_longest_all`).

    Most mentions overlap nothing; only the clusters that do are sorted and resolved.
    """
    m = len(start)
    if m < 2:
        return np.arange(m, dtype=np.int64)
    order = None
    if not (end[1:] >= end[:-1]).all():  # the automaton reports by end position; make sure
        order = np.argsort(end, kind="stable")
        start, end = start[order], end[order]
    # in end order, a mention overlaps some earlier one iff it overlaps its predecessor (whose end
    # is the largest so far); word cores are [start+1, end-1)
    hit = np.flatnonzero(start[1:] + 1 < end[:-1] - 1) + 1
    if len(hit) == 0:
        keep = np.arange(m, dtype=np.int64)
    else:
        # the earlier mentions i overlaps form the block [first, i]
        first = np.searchsorted(end, start[hit] + 2, side="right")
        mark = np.zeros(m + 1, dtype=np.int64)
        np.add.at(mark, first, 1)
        np.add.at(mark, hit + 1, -1)
        involved = np.cumsum(mark[:-1]) > 0
        inv = np.flatnonzero(involved)
        kept = inv[_longest_all(start[inv], end[inv])]
        keep = np.sort(np.concatenate((np.flatnonzero(~involved), kept)))
    return keep if order is None else order[keep]


def _longest_all(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Indices of the mentions that survive longest-match-wins, in (start, -end) order.

    Spans include the padding spaces, so neighbouring words share one byte; word cores are
    [start+1, end-1). A mention inside an earlier-starting or longer one is dropped; of two that
    cross, the longer stays (the earlier on a tie).
    """
    if len(start) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-end, start))
    s, e = start[order], end[order]
    prev_end = np.concatenate(([np.iinfo(np.int64).min], np.maximum.accumulate(e)[:-1]))
    contained = e <= prev_end
    order, s, e = order[~contained], s[~contained], e[~contained]
    prev_end = np.concatenate(([np.iinfo(np.int64).min], e[:-1]))
    crossing = np.flatnonzero(s + 1 < prev_end - 1)
    if len(crossing) == 0:
        return order
    alive = np.ones(len(order), dtype=bool)
    for i in crossing:  # rare: two multi-word mentions sharing a word
        j = i - 1
        while j >= 0 and not alive[j]:
            j -= 1
        if j < 0 or not (s[i] + 1 < e[j] - 1):
            continue
        if (e[i] - s[i]) > (e[j] - s[j]):
            alive[j] = False
        else:
            alive[i] = False
    return order[alive]


def _list_series(offsets: np.ndarray, values: np.ndarray, name: str = "labels") -> pl.Series:
    arr = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), pa.array(values, type=pa.int32()))
    return pl.Series(name, arr, dtype=LABELS_DTYPE)


def labels_from_mentions(m: Mentions, n_rows: int, n_classes: int, *, policy: str) -> pl.Series:
    """The ``labels`` column for ``n_rows`` captions from their mentions, under ``policy``."""
    check_policy(policy)
    if policy == "first":
        order = np.lexsort((m.label, m.start, m.row))
        rows_sorted = m.row[order]
        first = np.flatnonzero(np.concatenate(([True], rows_sorted[1:] != rows_sorted[:-1]))) if len(order) else order
        rows, labels = rows_sorted[first], m.label[order][first]
    else:
        keys = _sorted_unique(m.row * np.int64(n_classes) + m.label.astype(np.int64))
        rows, labels = keys // n_classes, keys % n_classes
        if policy == "drop":
            counts = np.bincount(rows, minlength=n_rows)
            single = counts[rows] == 1
            rows, labels = rows[single], labels[single]
    counts = np.bincount(rows, minlength=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _list_series(offsets, labels.astype(np.int32))


def spans_from_mentions(m: Mentions, n_rows: int, patterns: list[str]) -> pl.Series:
    """One list per caption of {label, start, end, surface}: byte offsets into the normalised,
    unpadded caption (``normalise(caption).strip()``), in order of position."""
    order = np.lexsort((m.label, m.start, m.row))
    rows = m.row[order]
    counts = np.bincount(rows, minlength=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    surf = np.array([p.strip() for p in patterns], dtype=object)
    struct = pa.StructArray.from_arrays(
        [
            pa.array(m.label[order], type=pa.int32()),
            pa.array(m.start[order].astype(np.int32), type=pa.int32()),
            pa.array(m.end[order].astype(np.int32), type=pa.int32()),
            pa.array(surf[m.pattern[order]].tolist() if len(order) else [], type=pa.large_string()),
        ],
        names=["label", "start", "end", "surface"],
    )
    arr = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), struct)
    return pl.Series("spans", arr, dtype=SPANS_DTYPE)


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise CurateError(f"--policy {policy!r} is not one of {', '.join(POLICIES)}")


def check_vocab(vocab: pl.DataFrame) -> None:
    missing = [c for c in ("label", "lemmas") if c not in vocab.columns]
    if missing:
        raise CurateError(f"vocabulary table lacks column(s) {', '.join(missing)} (has {', '.join(vocab.columns)})")
    if vocab.height == 0:
        raise CurateError("vocabulary is empty")
    labels = vocab["label"].to_list()
    if sorted(labels) != list(range(len(labels))):
        raise CurateError(f"vocabulary 'label' must be 0..{len(labels) - 1}, each once")


def _vocab_key(vocab: pl.DataFrame) -> tuple:
    cols = [c for c in ("label", "wnid", "lemmas", "negatives") if c in vocab.columns]
    return tuple(tuple(map(lambda v: tuple(v) if isinstance(v, list) else v, vocab[c].to_list())) for c in cols)


_CACHE: dict[tuple, Matcher] = {}


def compile_matcher(vocab: pl.DataFrame, *, rules: dict[str, NegativeRule] | None = None) -> Matcher:
    """Compile ``vocab`` into a :class:`Matcher` (cached per vocabulary contents)."""
    check_vocab(vocab)
    rules = NEGATIVE_RULES if rules is None else rules
    key = (_vocab_key(vocab), id(rules) if rules is not NEGATIVE_RULES else 0)
    if key in _CACHE:
        return _CACHE[key]

    labels = vocab["label"].to_list()
    wnids = vocab["wnid"].to_list() if "wnid" in vocab.columns else [None] * len(labels)
    lemma_lists = [[_QUALIFIER.sub("", lem).strip() for lem in (ls or [])] for ls in vocab["lemmas"].to_list()]
    negs = vocab["negatives"].to_list() if "negatives" in vocab.columns else [[] for _ in labels]

    wnid_set = set(wnids)
    rule_words = [w for k, r in rules.items() if k in wnid_set for w in (*r.context, *r.lemmas)]
    rule_words += [w for k, b in BLOCKED_LEMMAS.items() if k in wnid_set for w in b]
    rule_words += [w for ns in negs for w in (ns or ())]
    norm_of = normalise_many([lem for ls in lemma_lists for lem in ls if lem] + rule_words)
    irregular = _irregular_normalised()
    forms_of: dict[str, list[str]] = {}

    pattern_id: dict[str, int] = {}
    sense_label: list[int] = []
    sense_lemma: list[str] = []
    pat_senses: list[list[int]] = []
    surf_rows: dict[str, list] = {"label": [], "lemma": [], "surface": []}

    def pid_of(form: str) -> int:
        if form not in pattern_id:
            pattern_id[form] = len(pattern_id)
            pat_senses.append([])
        return pattern_id[form]

    senses_of_class_lemma: dict[tuple[int, str], list[int]] = {}
    for label, wnid, lemmas in zip(labels, wnids, lemma_lists):
        blocked = {norm_of[b] for b in BLOCKED_LEMMAS.get(wnid or "", ())}
        for lemma in lemmas:
            norm = norm_of.get(lemma, "")
            if not norm or norm in blocked:
                continue
            if norm not in forms_of:
                forms_of[norm] = surface_forms(norm, irregular)
            for form in forms_of[norm]:
                if len(form) < 2 or form in STOP_FORMS:
                    continue
                p = pid_of(form)
                if any(sense_label[s] == label for s in pat_senses[p]):
                    continue  # two lemmas of one class sharing a form: one sense
                sid = len(sense_label)
                sense_label.append(label)
                sense_lemma.append(norm)
                pat_senses[p].append(sid)
                senses_of_class_lemma.setdefault((label, norm), []).append(sid)
                surf_rows["label"].append(label)
                surf_rows["lemma"].append(norm)
                surf_rows["surface"].append(form)

    # vetoes: context pattern -> senses it cancels
    ctx_id: dict[str, int] = {}
    ctx_vetoes: list[set[int]] = []
    for label, wnid, lemmas, extra in zip(labels, wnids, lemma_lists, negs):
        class_lemmas = {norm_of.get(lem, "") for lem in lemmas} - {""}
        rule_list: list[tuple[tuple[str, ...], set[str]]] = []
        rule = rules.get(wnid or "")
        if rule is not None:
            targets = {norm_of[x] for x in rule.lemmas} & class_lemmas if rule.lemmas else class_lemmas
            rule_list.append((rule.context, targets))
        if extra:
            rule_list.append((tuple(extra), class_lemmas))
        for context, targets in rule_list:
            vetoed = [s for t in targets for s in senses_of_class_lemma.get((label, t), [])]
            if not vetoed:
                continue
            own_forms = {f for t in targets for f in forms_of.get(t, ())}
            for word in context:
                w = norm_of[word]
                if not w or w in own_forms:  # a class's own surface forms never veto it
                    continue
                if w not in ctx_id:
                    ctx_id[w] = len(ctx_id)
                    ctx_vetoes.append(set())
                ctx_vetoes[ctx_id[w]].update(vetoed)

    patterns = [f" {form} " for form in pattern_id]
    if not patterns:
        raise CurateError("no lemma of the vocabulary has a matchable form (all are empty after normalisation)")
    sense_ptr, sense_vals = _csr(pat_senses)
    veto_ptr, veto_vals = _csr([sorted(v) for v in ctx_vetoes])
    matcher = Matcher(
        n_classes=len(labels),
        patterns=patterns,
        sense_label=np.asarray(sense_label, dtype=np.int32),
        pat_sense_ptr=sense_ptr,
        pat_sense=sense_vals,
        context=[f" {w} " for w in ctx_id],
        ctx_veto_ptr=veto_ptr,
        ctx_veto=veto_vals,
        surfaces=pl.DataFrame(surf_rows, schema={"label": pl.Int32, "lemma": pl.Utf8, "surface": pl.Utf8}),
    )
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = matcher
    return matcher


# ---------------------------------------------------------------------------------------------
# the reference study's counting

TOKEN_PATTERN = r"\w+(?:-\w+)*"


@functools.lru_cache(maxsize=1)
def _wordnet():
    from curate.wordnet import wordnet

    return wordnet()


@functools.lru_cache(maxsize=200_000)
def lemmatise(token: str) -> str:
    """nltk's ``WordNetLemmatizer().lemmatize(token)`` (noun), on the offline WordNet reader.

    nltk's class reads the global ``nltk.corpus.wordnet``, which is not installed offline; this is
    its body (the shortest of ``_morphy``'s lemmas, else the token) on :func:`curate.wordnet.wordnet`.
    """
    lemmas = _wordnet()._morphy(token, "n")  # noqa: SLF001 - what WordNetLemmatizer itself calls
    return min(lemmas, key=len) if lemmas else token


def reference_tokens(text: str) -> list[str]:
    """The reference study's tokens of one text: lower-cased, regex-tokenised, lemmatised."""
    return [lemmatise(t) for t in re.findall(TOKEN_PATTERN, text.lower())]


@dataclass
class ReferenceMatcher:
    n_classes: int
    synonyms: pl.DataFrame  # syn, label, token, n_tokens


@functools.lru_cache(maxsize=4)
def _reference_matcher_cached(key: tuple) -> ReferenceMatcher:
    labels, lemma_lists = key
    rows: dict[str, list] = {"syn": [], "label": [], "token": [], "n_tokens": []}
    syn = 0
    for label, lemmas in zip(labels, lemma_lists):
        for lemma in lemmas:
            toks = sorted(set(reference_tokens(_QUALIFIER.sub("", lemma))))
            if not toks:
                continue
            for t in toks:
                rows["syn"].append(syn)
                rows["label"].append(label)
                rows["token"].append(t)
                rows["n_tokens"].append(len(toks))
            syn += 1
    table = pl.DataFrame(rows, schema={"syn": pl.Int64, "label": pl.Int32, "token": pl.Utf8, "n_tokens": pl.UInt32})
    return ReferenceMatcher(n_classes=len(labels), synonyms=table)


def compile_reference_matcher(vocab: pl.DataFrame) -> ReferenceMatcher:
    check_vocab(vocab)
    key = (tuple(vocab["label"].to_list()), tuple(tuple(ls or ()) for ls in vocab["lemmas"].to_list()))
    return _reference_matcher_cached(key)


def reference_labels(captions: pl.Series, ref: ReferenceMatcher, *, policy: str = "all") -> pl.Series:
    """Labels by the reference study's rule: all tokens of a synonym present anywhere (lemmatised)."""
    check_policy(policy)
    if policy == "first":
        raise CurateError("--policy first needs positions; --mode reference has none (use all or drop)")
    n = len(captions)
    toks = (
        pl.DataFrame({"c": captions.cast(pl.Utf8).fill_null("")})
        .with_row_index("row")
        .select("row", pl.col("c").str.to_lowercase().str.extract_all(TOKEN_PATTERN).alias("token"))
        .explode("token")
        .drop_nulls("token")
        .unique()
    )
    uniq = toks["token"].unique().to_list()
    lemma_map = pl.DataFrame({"token": uniq, "lemma": [lemmatise(t) for t in uniq]}, schema={"token": pl.Utf8, "lemma": pl.Utf8})
    pairs = toks.join(lemma_map, on="token").select("row", pl.col("lemma").alias("token")).unique()
    hit = (
        pairs.join(ref.synonyms, on="token")
        .group_by("row", "syn", "label", "n_tokens")
        .len()
        .filter(pl.col("len") == pl.col("n_tokens"))
        .select("row", "label")
        .unique()
    )
    m = Mentions(
        row=hit["row"].to_numpy().astype(np.int64),
        label=hit["label"].to_numpy().astype(np.int32),
        start=np.zeros(hit.height, dtype=np.int64),
        end=np.zeros(hit.height, dtype=np.int64),
        pattern=np.zeros(hit.height, dtype=np.int64),
    )
    return labels_from_mentions(m, n, ref.n_classes, policy=policy)


def reference_labels_naive(caption: str | None, vocab: pl.DataFrame) -> list[int]:
    """The reference method written the slow, obvious way (per class, per synonym): the check for
    :func:`reference_labels` and the baseline of the benchmark."""
    if caption is None:
        return []
    present = set(reference_tokens(caption))
    out = []
    for label, lemmas in zip(vocab["label"].to_list(), vocab["lemmas"].to_list()):
        for lemma in lemmas:
            toks = reference_tokens(_QUALIFIER.sub("", lemma))
            if toks and all(t in present for t in toks):
                out.append(label)
                break
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# the stage

def match_captions(
    lf: pl.LazyFrame,
    vocab: pl.DataFrame,
    *,
    policy: str = "all",
    mode: str = "curate",
    spans: bool = False,
    caption_col: str = "caption",
) -> pl.LazyFrame:
    """The input rows plus ``labels`` (List[Int32], vocabulary ``label`` values); see the module
    docstring for the policies and modes. With ``spans``, also ``spans``: the accepted mentions
    (label, byte offsets into the normalised caption, surface form) before the policy.

    Runs batch by batch (``map_batches``, elementwise), so it streams under
    ``collect(engine="streaming")`` and ``sink_parquet``, and polars runs batches side by side: the
    heavy steps (polars kernels, the automaton, large numpy operations) release the GIL.
    """
    check_policy(policy)
    if mode not in MODES:
        raise CurateError(f"--mode {mode!r} is not one of {', '.join(MODES)}")
    names = lf.collect_schema().names()
    if caption_col not in names:
        raise CurateError(f"caption column {caption_col!r} not found (columns: {', '.join(names)})")
    if "labels" in names:
        raise CurateError("the input already has a 'labels' column; rename or drop it first")
    if mode == "reference":
        if policy == "first":
            raise CurateError("--policy first needs positions; --mode reference has none (use all or drop)")
        if spans:
            raise CurateError("--spans needs positions; --mode reference has none")
        ref = compile_reference_matcher(vocab)
        return lf.with_columns(
            pl.col(caption_col)
            .map_batches(lambda s: reference_labels(s, ref, policy=policy), return_dtype=LABELS_DTYPE, is_elementwise=True)
            .alias("labels")
        )
    matcher = compile_matcher(vocab)
    matcher.warm_up()  # build and compile now, not inside the first batch of every worker
    if not spans:
        return lf.with_columns(
            pl.col(caption_col)
            .map_batches(lambda s: matcher.labels(s, policy=policy), return_dtype=LABELS_DTYPE, is_elementwise=True)
            .alias("labels")
        )

    struct_dtype = pl.Struct({"labels": LABELS_DTYPE, "spans": SPANS_DTYPE})

    def both(s: pl.Series) -> pl.Series:
        m = matcher.mentions(s)
        return pl.struct(
            labels_from_mentions(m, len(s), matcher.n_classes, policy=policy),
            spans_from_mentions(m, len(s), matcher.patterns),
            eager=True,
        ).alias("_match")

    return (
        lf.with_columns(
            pl.col(caption_col)
            .map_batches(both, return_dtype=struct_dtype, is_elementwise=True)
            .alias("_match")
        )
        .with_columns(pl.col("_match").struct.field("labels"), pl.col("_match").struct.field("spans"))
        .drop("_match")
    )
