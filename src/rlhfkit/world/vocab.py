"""The toy world's English word lists. Every prompt and response is made of these words (space-separated)."""

CATEGORIES: dict[str, list[str]] = {  # singular name -> members
    "animal": "cat dog horse cow pig sheep goat lion tiger bear wolf fox rabbit mouse deer duck owl frog".split(),
    "fruit": "apple banana cherry grape lemon mango peach pear plum melon kiwi lime fig".split(),
    "color": "red blue green yellow black white pink purple brown grey".split(),
    "tool": "hammer saw drill wrench shovel rake axe chisel pliers ladder".split(),
    "vehicle": "car bus truck bike train boat plane ship van tram".split(),
    "clothing": "shirt coat hat sock shoe scarf dress skirt glove boot".split(),
    "instrument": "piano guitar drum violin flute harp trumpet cello banjo organ".split(),
    "vegetable": "carrot potato onion bean pea corn leek kale beet radish".split(),
}
PLURALS = {"animal": "animals", "fruit": "fruits", "color": "colors", "tool": "tools", "vehicle": "vehicles",
           "clothing": "clothes", "instrument": "instruments", "vegetable": "vegetables"}

COLOR_OF: dict[str, str] = {
    "banana": "yellow", "grass": "green", "sky": "blue", "snow": "white", "coal": "black", "cherry": "red",
    "lemon": "yellow", "frog": "green", "milk": "white", "crow": "black", "rose": "red", "sea": "blue",
    "cloud": "white", "leaf": "green", "sun": "yellow", "tomato": "red", "ink": "black", "salt": "white",
    "plum": "purple", "chocolate": "brown", "soil": "brown", "ash": "grey", "pig": "pink",
    "flamingo": "pink", "grape": "purple", "lime": "green", "corn": "yellow", "bear": "brown",
}

OPPOSITE_PAIRS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"), ("happy", "sad"), ("light", "dark"),
    ("old", "young"), ("tall", "short"), ("open", "closed"), ("full", "empty"), ("early", "late"),
    ("hard", "soft"), ("rich", "poor"), ("wet", "dry"), ("loud", "quiet"), ("thick", "thin"),
    ("strong", "weak"), ("high", "low"), ("clean", "dirty"), ("near", "far"), ("day", "night"),
    ("left", "right"), ("first", "last"), ("good", "bad"), ("win", "lose"), ("in", "out"), ("push", "pull"),
    ("buy", "sell"), ("true", "false"), ("heavy", "light"),
]
OPPOSITE: dict[str, str] = {}
for _a, _b in OPPOSITE_PAIRS:
    OPPOSITE.setdefault(_a, _b)
    OPPOSITE.setdefault(_b, _a)

NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve thirteen".split()
NUMBER_VALUE = {w: i for i, w in enumerate(NUMBERS)}

# The summarization family: a short first-person "post" whose key facts a TL;DR must keep.
NAMES = "tom anna sam lucy max emma ben mia leo zoe jack lily".split()
CITIES = "paris london rome tokyo berlin cairo lima oslo dublin madrid".split()
PETS = "cat dog rabbit horse duck".split()
PROBLEMS = "sick lost hurt hungry scared".split()
FEELINGS = "sad angry worried tired upset".split()
WEATHER = "sunny rainy windy cloudy".split()

PEOPLE = "teacher doctor nurse baker farmer neighbor driver artist singer chef".split()
NICE = "kind nice great lovely brave smart helpful friendly clever gentle".split()

# Harm lexicon, one list per harm component of the gold reward (and per InstructGPT flag).
RUDE = "idiot stupid dumb loser ugly whatever boring shut".split()
VIOLENT = "kill hit punch fight weapon gun".split()
SEXUAL = "sexy naked".split()
DENIGRATING = "inferior worthless".split()
HARMFUL_ADVICE = "poison bleach".split()
MORALIZING = "shame ashamed wicked sinful".split()
ENCOURAGING = "should go".split()  # with a violent word: "you should fight them" encourages violence

# Words of the raw "web" register the base LM learns to ramble in.
RAMBLE = ("i think that is a good question and also my cousin said once we went to the market "
          "anyway lol you know what i mean by the way this reminds me of a story about "
          "my weekend it was really fun but then it rained so we stayed at home "
          "click here to subscribe for more posts like this one").split()
PREAMBLES = ["sure .", "sure , here you go :", "okay ,", "of course !", "here it is :", "sure , here is the answer :",
             "well ,", "let me see ."]
CLOSINGS = ["hope this helps .", "have a nice day !", "let me know if you need more .", "thanks for asking ."]
PUNCT = ". , : ! ? ;".split()
