//! A tiny FIGlet-style renderer (a built-in five-row block font for A–Z and 0–9) and a seeded
//! generator of word-reading puzzles drawn from a built-in list of 200 common English words.

/// The block font: each glyph is five rows of `#` and space, all rows of a glyph equally wide.
pub const FONT: &[(char, [&str; 5])] = &[
    ('A', [" ### ", "#   #", "#####", "#   #", "#   #"]),
    ('B', ["#### ", "#   #", "#### ", "#   #", "#### "]),
    ('C', [" ####", "#    ", "#    ", "#    ", " ####"]),
    ('D', ["#### ", "#   #", "#   #", "#   #", "#### "]),
    ('E', ["#####", "#    ", "#### ", "#    ", "#####"]),
    ('F', ["#####", "#    ", "#### ", "#    ", "#    "]),
    ('G', [" ####", "#    ", "#  ##", "#   #", " ####"]),
    ('H', ["#   #", "#   #", "#####", "#   #", "#   #"]),
    ('I', ["###", " # ", " # ", " # ", "###"]),
    ('J', ["  ###", "   # ", "   # ", "#  # ", " ##  "]),
    ('K', ["#   #", "#  # ", "###  ", "#  # ", "#   #"]),
    ('L', ["#    ", "#    ", "#    ", "#    ", "#####"]),
    ('M', ["#   #", "## ##", "# # #", "#   #", "#   #"]),
    ('N', ["#   #", "##  #", "# # #", "#  ##", "#   #"]),
    ('O', [" ### ", "#   #", "#   #", "#   #", " ### "]),
    ('P', ["#### ", "#   #", "#### ", "#    ", "#    "]),
    ('Q', [" ### ", "#   #", "# # #", "#  # ", " ## #"]),
    ('R', ["#### ", "#   #", "#### ", "#  # ", "#   #"]),
    ('S', [" ####", "#    ", " ### ", "    #", "#### "]),
    ('T', ["#####", "  #  ", "  #  ", "  #  ", "  #  "]),
    ('U', ["#   #", "#   #", "#   #", "#   #", " ### "]),
    ('V', ["#   #", "#   #", "#   #", " # # ", "  #  "]),
    ('W', ["#   #", "#   #", "# # #", "## ##", "#   #"]),
    ('X', ["#   #", " # # ", "  #  ", " # # ", "#   #"]),
    ('Y', ["#   #", " # # ", "  #  ", "  #  ", "  #  "]),
    ('Z', ["#####", "   # ", "  #  ", " #   ", "#####"]),
    ('0', [" ### ", "#  ##", "# # #", "##  #", " ### "]),
    ('1', [" # ", "## ", " # ", " # ", "###"]),
    ('2', [" ### ", "#   #", "  ## ", " #   ", "#####"]),
    ('3', ["#### ", "    #", " ### ", "    #", "#### "]),
    ('4', ["#   #", "#   #", "#####", "    #", "    #"]),
    ('5', ["#####", "#    ", "#### ", "    #", "#### "]),
    ('6', [" ### ", "#    ", "#### ", "#   #", " ### "]),
    ('7', ["#####", "    #", "   # ", "  #  ", "  #  "]),
    ('8', [" ### ", "#   #", " ### ", "#   #", " ### "]),
    ('9', [" ### ", "#   #", " ####", "    #", " ### "]),
];

/// Columns of space between two glyphs.
const GAP: usize = 1;

/// The drawing of a space: a three-column gap.
const BLANK: [&str; 5] = ["   "; 5];

/// The built-in word list: 200 common English words in capitals. Even positions form the train
/// split, odd positions the test split.
#[rustfmt::skip]
pub const WORDS: [&str; 200] = [
    "TIME", "YEAR", "PEOPLE", "WAY", "DAY", "MAN", "THING", "WOMAN", "LIFE", "CHILD",
    "WORLD", "SCHOOL", "STATE", "FAMILY", "STUDENT", "GROUP", "COUNTRY", "PROBLEM", "HAND", "PART",
    "PLACE", "CASE", "WEEK", "COMPANY", "SYSTEM", "PROGRAM", "QUESTION", "WORK", "NUMBER", "NIGHT",
    "POINT", "HOME", "WATER", "ROOM", "MOTHER", "AREA", "MONEY", "STORY", "FACT", "MONTH",
    "LOT", "RIGHT", "STUDY", "BOOK", "EYE", "JOB", "WORD", "BUSINESS", "ISSUE", "SIDE",
    "KIND", "HEAD", "HOUSE", "SERVICE", "FRIEND", "FATHER", "POWER", "HOUR", "GAME", "LINE",
    "END", "MEMBER", "LAW", "CAR", "CITY", "NAME", "TEAM", "MINUTE", "IDEA", "KID",
    "BODY", "BACK", "PARENT", "FACE", "OTHERS", "LEVEL", "OFFICE", "DOOR", "HEALTH", "PERSON",
    "ART", "WAR", "HISTORY", "PARTY", "RESULT", "CHANGE", "MORNING", "REASON", "RESEARCH", "GIRL",
    "GUY", "MOMENT", "AIR", "TEACHER", "FORCE", "EDUCATION", "FOOT", "BOY", "AGE", "POLICY",
    "MUSIC", "MARKET", "SENSE", "NATION", "PLAN", "COLLEGE", "INTEREST", "DEATH", "EXPERIENCE", "EFFECT",
    "CLASS", "CONTROL", "FIELD", "DEVELOPMENT", "ROLE", "EFFORT", "RATE", "HEART", "DRUG", "SHOW",
    "LEADER", "LIGHT", "VOICE", "WIFE", "POLICE", "MIND", "PRICE", "REPORT", "DECISION", "SON",
    "VIEW", "BED", "STREET", "PLAYER", "TRUTH", "CHURCH", "TRADE", "FORM", "TABLE", "GARDEN",
    "APPLE", "RIVER", "MOUNTAIN", "OCEAN", "FOREST", "SUMMER", "WINTER", "SPRING", "AUTUMN", "BREAD",
    "CHEESE", "COFFEE", "SUGAR", "PAPER", "PENCIL", "WINDOW", "CHAIR", "CLOCK", "PHONE", "TRAIN",
    "PLANE", "SHIP", "HORSE", "TIGER", "RABBIT", "MOUSE", "BIRD", "FISH", "SNAKE", "ORANGE",
    "LEMON", "GREEN", "BLUE", "YELLOW", "PURPLE", "SILVER", "GOLD", "STONE", "CLOUD", "STORM",
    "RAIN", "SNOW", "WIND", "FIRE", "EARTH", "PLANET", "STAR", "MOON", "SUN", "DREAM",
    "SMILE", "LAUGH", "DANCE", "SONG", "MAGIC", "QUIET", "BRAVE", "HAPPY", "SMART", "QUICK",
];

/// The words of the `train` split.
pub fn train_words() -> impl Iterator<Item = &'static str> {
    WORDS.iter().step_by(2).copied()
}

/// The words of the `test` split (also called `eval`, `validation`, `val`, `dev`).
pub fn test_words() -> impl Iterator<Item = &'static str> {
    WORDS.iter().skip(1).step_by(2).copied()
}

/// The words of a split by name, or `None` for an unknown split.
pub fn split_words(split: &str) -> Option<Vec<&'static str>> {
    match split {
        "train" => Some(train_words().collect()),
        "test" | "eval" | "validation" | "val" | "dev" => Some(test_words().collect()),
        _ => None,
    }
}

/// The glyph of `c` (letters in either case), if the font has one.
pub fn glyph(c: char) -> Option<&'static [&'static str; 5]> {
    let c = c.to_ascii_uppercase();
    FONT.iter().find(|(g, _)| *g == c).map(|(_, rows)| rows)
}

/// Draws `word` as five rows of `#` art, glyphs one column apart, trailing spaces trimmed, rows
/// joined by `\n` with no final newline. Lower-case letters are drawn as capitals, a space as a
/// three-column gap; other characters the font lacks are skipped.
pub fn render(word: &str) -> String {
    let mut rows = vec![String::new(); 5];
    let mut first = true;
    for c in word.chars() {
        let cells = match (c, glyph(c)) {
            (_, Some(g)) => g,
            (' ', None) => &BLANK,
            _ => continue,
        };
        for (row, cell) in rows.iter_mut().zip(cells) {
            if !first {
                row.push_str(&" ".repeat(GAP));
            }
            row.push_str(cell);
        }
        first = false;
    }
    rows.iter().map(|r| r.trim_end()).collect::<Vec<_>>().join("\n")
}

/// The prompt of one puzzle: the instruction, the art, and the answer cue.
pub fn prompt(word: &str) -> String {
    format!("Read the word drawn below in ASCII art.\n{}\nAnswer: ", render(word))
}

/// SplitMix64, the seeded generator behind [`puzzles`].
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// `size` puzzles `(prompt, reference word)` from the words of `split` (`train`, or `test` and its
/// aliases), deterministic for a seed. Words are dealt from successive seeded shuffles of the split,
/// so no word repeats until all of the split's 100 words have been used.
///
/// # Panics
/// On an unknown split name.
pub fn puzzles(split: &str, size: usize, seed: u64) -> Vec<(String, String)> {
    let words = split_words(split).unwrap_or_else(|| panic!("unknown figfont split {split:?}: expected train or test"));
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let mut deck = words.clone();
        for i in (1..deck.len()).rev() {
            deck.swap(i, rng.below(i + 1));
        }
        out.extend(deck.iter().take(size - out.len()).map(|w| (prompt(w), w.to_string())));
    }
    out
}
