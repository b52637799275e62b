#!/usr/bin/env python3
"""Dev-only: label MATH-style (generation, reference) grading pairs with Hugging Face's math-verify.

    pip install math-verify==0.9.0  # with latex2sympy2_extended 1.11.0
    python3 scripts/make_math_grading_table.py > plugins/math/tests/math_verify_table.jsonl

Each pair is (form, reference, answer, generation template). The answer is put in the template (most
wrap it in a box, a few test extraction: last box wins, no box at all). The oracle call is the one the
math-verify README gives for grading against a gold answer: `verify(parse(gold), parse(generation))`
with the gold wrapped in `\\boxed{}` so that it is read as LaTeX. The table is committed; the plugin's
test (`plugins/math/src/tests.rs`) checks its verdicts against the `math_verify` column. CI never runs
this script.
"""

import json
import sys

from math_verify import parse, verify

TEMPLATES = [
    "The answer is $\\boxed{%s}$.",
    "Therefore, the final answer is $\\boxed{%s}$.",
    "We conclude that \\[\\boxed{%s}\\]",
    "\\boxed{%s}",
]

# (form, reference, [equivalent answers], [wrong answers])
FORMS = [
    ("integer", "42", ["42", "42.0", "{42}", "042"], ["43", "-42", "4.2"]),
    ("integer", "-7", ["-7", "-7.00", "(-7)"], ["7", "-8"]),
    ("integer", "1000000", ["1,000,000", "1{,}000{,}000", "1000000", "10^6"], ["100000", "1,000,001"]),
    ("integer", "2024", ["2024", "2{,}024", "2,024"], ["2025"]),
    ("decimal", "0.5", ["0.5", ".5", "\\frac{1}{2}", "1/2", "0.50"], ["0.05", "5"]),
    ("decimal", "3.75", ["3.75", "\\frac{15}{4}", "3\\frac{3}{4}", "15/4"], ["3.7", "3.57"]),
    ("decimal", "0.125", ["0.125", "\\frac18", "1/8"], ["0.12", "\\frac{1}{4}"]),
    ("fraction", "\\frac{1}{2}", ["\\frac12", "\\dfrac{1}{2}", "\\tfrac{1}{2}", "1/2", "0.5", "\\frac{2}{4}"], ["\\frac{1}{3}", "2"]),
    ("fraction", "\\frac{3}{4}", ["\\frac34", "\\dfrac{3}{4}", "3/4", "0.75", "\\frac{6}{8}"], ["\\frac{4}{3}", "\\frac{3}{5}"]),
    ("fraction", "-\\frac{2}{3}", ["-\\frac{2}{3}", "\\frac{-2}{3}", "\\frac{2}{-3}", "-2/3"], ["\\frac{2}{3}", "-\\frac{3}{2}"]),
    ("fraction", "\\frac{7}{2}", ["\\frac{7}{2}", "3.5", "\\dfrac72", "7/2"], ["\\frac{2}{7}", "3.2"]),
    ("nested fraction", "\\frac{1}{6}", ["\\frac{\\frac{1}{2}}{3}", "\\frac{1}{2}\\cdot\\frac{1}{3}", "\\dfrac{1}{6}"], ["\\frac{1}{\\frac{2}{3}}", "\\frac{3}{2}"]),
    ("nested fraction", "\\frac{3}{2}", ["\\frac{1}{\\frac{2}{3}}", "\\frac{\\frac{3}{4}}{\\frac{1}{2}}", "1.5"], ["\\frac{2}{3}"]),
    ("nested fraction", "\\frac{5}{8}", ["\\frac{\\frac{5}{2}}{4}", "\\frac{5}{2 \\cdot 4}"], ["\\frac{5}{2}"]),
    ("mixed number", "\\frac{7}{2}", ["3\\frac{1}{2}", "3\\frac12", "3 \\frac{1}{2}"], ["3\\frac{1}{3}"]),
    ("mixed number", "2\\frac{1}{3}", ["\\frac{7}{3}", "2\\frac{1}{3}", "7/3"], ["\\frac{2}{3}", "2\\frac{1}{4}"]),
    ("percentage", "25\\%", ["25\\%", "25", "25 \\%", "25\\text{\\%}"], ["0.5", "20\\%"]),
    ("percentage", "12.5", ["12.5\\%", "12.5"], ["12"]),
    ("units", "5", ["5\\text{ cm}", "5 \\mbox{ inches}", "5\\text{ meters}", "5\\,\\text{cm}", "\\text{5}"], ["6\\text{ cm}"]),
    ("units", "18", ["18 \\text{ dollars}", "\\$18", "18\\text{ square units}", "\\$18.00"], ["\\$81"]),
    ("units", "12", ["12\\text{ hours}", "12 \\text{ days}", "\\mathrm{12}"], ["13\\text{ hours}"]),
    ("degrees", "30", ["30^\\circ", "30^{\\circ}", "30\\text{ degrees}", "30"], ["60^\\circ"]),
    ("degrees", "120^\\circ", ["120", "120^\\circ", "120^{\\circ}"], ["60"]),
    ("sqrt", "\\frac{\\sqrt{3}}{2}", ["\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", "\\sqrt{3}/2", "\\frac{3}{2\\sqrt{3}}"], ["\\frac{\\sqrt{2}}{2}", "\\sqrt{3}"]),
    ("sqrt", "\\sqrt{18}", ["3\\sqrt{2}", "3\\sqrt2", "\\sqrt{18}", "\\sqrt{2}\\cdot 3"], ["2\\sqrt{3}", "9\\sqrt{2}"]),
    ("sqrt", "2\\sqrt{5}", ["\\sqrt{20}", "2\\sqrt5", "2 \\sqrt{5}"], ["\\sqrt{10}", "5\\sqrt{2}"]),
    ("sqrt", "\\sqrt[3]{2}", ["\\sqrt[3]{2}", "2^{1/3}", "2^{\\frac{1}{3}}"], ["\\sqrt{2}", "2^{1/2}"]),
    ("sqrt", "1+\\sqrt{2}", ["\\sqrt{2}+1", "1+\\sqrt2", "\\frac{1}{\\sqrt{2}-1}"], ["1-\\sqrt{2}", "\\sqrt{3}"]),
    ("sqrt", "\\frac{\\sqrt{6}}{3}", ["\\sqrt{\\frac{2}{3}}", "\\frac{2}{\\sqrt{6}}", "\\frac{\\sqrt6}{3}"], ["\\frac{\\sqrt{6}}{2}"]),
    ("pi", "\\frac{\\pi}{2}", ["\\pi/2", "\\frac{\\pi}{2}", "\\frac12\\pi", "0.5\\pi"], ["\\pi", "2\\pi"]),
    ("pi", "4\\pi", ["4\\pi", "4 \\pi", "\\pi \\cdot 4", "\\frac{8\\pi}{2}"], ["4", "2\\pi"]),
    ("pi", "\\frac{3\\pi}{4}", ["\\frac{3}{4}\\pi", "0.75\\pi", "3\\pi/4"], ["\\frac{4\\pi}{3}"]),
    ("pi", "36\\pi", ["36\\pi", "36 \\pi \\text{ cubic units}"], ["36", "12\\pi"]),
    ("e", "e^2", ["e^2", "e^{2}", "e \\cdot e"], ["2e", "e^3"]),
    ("choice", "B", ["\\text{(B)}", "\\text{B}", "(B)", "B", "\\textbf{(B)}"], ["\\text{(C)}", "A"]),
    ("choice", "\\text{(D)}", ["D", "\\text{(D)}", "(D)"], ["E"]),
    ("expression", "x^2+1", ["x^{2}+1", "1+x^2", "x^2 + 1", "1 + x^{2}", "(x^2+1)"], ["x^2-1", "x^3+1", "x+1"]),
    ("expression", "2x+3", ["3+2x", "2 x + 3", "2\\cdot x+3", "x+x+3"], ["2x-3", "3x+2"]),
    ("expression", "(x+1)^2", ["x^2+2x+1", "(1+x)^2", "(x+1)(x+1)"], ["x^2+1", "(x-1)^2"]),
    ("expression", "\\frac{x+1}{x-1}", ["\\frac{1+x}{x-1}", "\\frac{-x-1}{1-x}", "(x+1)/(x-1)"], ["\\frac{x-1}{x+1}"]),
    ("expression", "a^2 b", ["ba^2", "a \\cdot a \\cdot b", "a^{2}b"], ["ab^2"]),
    ("expression", "3x^2-5x+2", ["(3x-2)(x-1)", "2-5x+3x^2"], ["(3x+2)(x-1)"]),
    ("expression", "\\frac{1}{x}", ["x^{-1}", "1/x", "\\frac1x"], ["x"]),
    ("expression", "y = 2x + 1", ["y=2x+1", "y = 1 + 2x", "2x+1"], ["y=2x-1"]),
    ("trig", "\\sin(x)", ["\\sin x", "\\sin(x)", "\\sin{x}"], ["\\cos x"]),
    ("trig", "\\frac{1}{2}", ["\\sin(\\pi/6)", "\\cos\\frac{\\pi}{3}", "\\sin 30^\\circ"], ["\\sin(\\pi/3)"]),
    ("trig", "\\frac{\\sqrt{2}}{2}", ["\\cos\\frac{\\pi}{4}", "\\frac{1}{\\sqrt{2}}", "\\sin(45^\\circ)"], ["\\frac{\\sqrt{3}}{2}"]),
    ("trig", "\\tan^2 x + 1", ["\\sec^2 x", "\\frac{1}{\\cos^2 x}"], ["\\sec x"]),
    ("log", "\\log_2 8", ["3", "\\log_{2}8", "\\log_2(8)"], ["8", "\\log_3 8"]),
    ("log", "\\ln 2", ["\\ln(2)", "\\log(2)", "\\ln{2}"], ["\\ln 3", "2"]),
    ("log", "2\\ln 3", ["\\ln 9", "\\ln(9)", "\\ln 3 + \\ln 3"], ["\\ln 6"]),
    ("scientific notation", "3\\times 10^{5}", ["300000", "3 \\cdot 10^5", "3\\times10^5", "300{,}000"], ["3\\times 10^{6}", "30000"]),
    ("scientific notation", "0.00012", ["1.2\\times 10^{-4}", "1.2 \\cdot 10^{-4}", "0.00012"], ["1.2\\times 10^{-3}"]),
    ("scientific notation", "6.02\\times10^{23}", ["6.02 \\times 10^{23}", "602\\times10^{21}"], ["6.02\\times 10^{22}"]),
    ("plus-minus", "\\pm 3", ["\\pm3", "3, -3", "-3, 3", "\\pm 3"], ["3", "-3"]),
    ("plus-minus", "1 \\pm \\sqrt{2}", ["1\\pm\\sqrt2", "1+\\sqrt{2}, 1-\\sqrt{2}", "1-\\sqrt2,1+\\sqrt2"], ["1+\\sqrt{2}", "2\\pm\\sqrt{2}"]),
    ("plus-minus", "\\frac{-1 \\pm \\sqrt{5}}{2}", ["\\frac{-1\\pm\\sqrt5}{2}", "\\frac{-1+\\sqrt{5}}{2}, \\frac{-1-\\sqrt{5}}{2}"], ["\\frac{1\\pm\\sqrt{5}}{2}"]),
    ("inequality", "x > 3", ["x>3", "(3, \\infty)", "3 < x", "(3,\\infty)"], ["x \\ge 3", "[3, \\infty)", "x < 3"]),
    ("inequality", "x \\le -1", ["x\\leq -1", "(-\\infty, -1]", "-1 \\ge x"], ["(-\\infty, -1)", "x < -1"]),
    ("inequality", "-2 < x < 5", ["(-2, 5)", "-2<x<5"], ["[-2, 5]", "(-2, 5]"]),
    ("inequality", "x \\geq 0", ["[0, \\infty)", "x \\ge 0", "0 \\le x"], ["(0, \\infty)"]),
    ("interval", "[2, 5)", ["[2,5)", "[2, 5)", "\\left[2, 5\\right)"], ["(2, 5)", "[2, 5]", "[2, 6)"]),
    ("interval", "(-\\infty, 0)", ["(-\\infty,0)", "\\left(-\\infty, 0\\right)"], ["(-\\infty, 0]", "(0, \\infty)"]),
    ("interval", "(-\\infty, \\infty)", ["(-\\infty,\\infty)", "\\mathbb{R}"], ["(0,\\infty)"]),
    ("interval", "(-\\infty, -2) \\cup (3, \\infty)", ["(-\\infty,-2)\\cup(3,\\infty)", "(3, \\infty) \\cup (-\\infty, -2)"], ["(-\\infty, -2] \\cup (3, \\infty)", "(-2, 3)"]),
    ("interval", "[0, 1]", ["[0,1]", "\\left[0,1\\right]"], ["(0,1)", "[0, 2]"]),
    ("infinity", "\\infty", ["\\infty", "+\\infty", "\\infty"], ["-\\infty", "0"]),
    ("infinity", "-\\infty", ["-\\infty"], ["\\infty"]),
    ("tuple", "(1, 2)", ["(1,2)", "\\left(1, 2\\right)", "(1, 2)", "(1.0, 2)"], ["(2, 1)", "(1, 3)"]),
    ("tuple", "(3, -1, 2)", ["(3,-1,2)", "\\left( 3, -1, 2 \\right)"], ["(3, 1, 2)", "(2, -1, 3)"]),
    ("tuple", "\\left( \\frac{1}{2}, \\sqrt{3} \\right)", ["(\\frac12, \\sqrt3)", "(0.5, \\sqrt{3})"], ["(\\sqrt{3}, \\frac12)"]),
    ("tuple", "(2, \\frac{\\pi}{3})", ["\\left( 2, \\frac{\\pi}{3} \\right)", "(2, \\pi/3)"], ["(2, \\frac{\\pi}{6})"]),
    ("set", "\\{1, 2, 3\\}", ["\\{1,2,3\\}", "\\{3, 2, 1\\}", "\\{2,1,3\\}"], ["\\{1, 2\\}", "\\{1, 2, 4\\}"]),
    ("set", "\\{-1, 4\\}", ["\\{4, -1\\}", "\\{-1,4\\}"], ["\\{1, 4\\}"]),
    ("list", "1, 2", ["1,2", "2, 1", "1 \\text{ and } 2"], ["1", "1, 3"]),
    ("list", "-3, 5", ["5, -3", "-3,5"], ["3, 5", "-3"]),
    ("list", "2, 4, 6", ["6, 4, 2", "2,4,6"], ["2, 4", "2, 4, 8"]),
    ("equation", "x = 5", ["5", "x=5", "x = 5"], ["x = 6", "6"]),
    ("equation", "7", ["x = 7", "n = 7", "a=7"], ["x = 8"]),
    ("equation", "y = -\\frac{1}{2}", ["-\\frac12", "y=-0.5", "-1/2"], ["\\frac{1}{2}"]),
    ("matrix", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", ["\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}"], ["\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}"]),
    ("matrix", "\\begin{pmatrix} \\frac{1}{2} \\\\ -1 \\end{pmatrix}", ["\\begin{pmatrix} 0.5 \\\\ -1 \\end{pmatrix}", "\\begin{pmatrix}\\frac12\\\\-1\\end{pmatrix}"], ["\\begin{pmatrix} -1 \\\\ \\frac{1}{2} \\end{pmatrix}"]),
    ("matrix", "\\begin{pmatrix} 2 & 0 \\\\ 0 & 2 \\end{pmatrix}", ["\\begin{pmatrix} 2 & 0 \\\\ 0 & 2 \\end{pmatrix}"], ["\\begin{pmatrix} 2 & 0 \\\\ 0 & 3 \\end{pmatrix}"]),
    ("left-right", "\\left(\\frac{1}{3}\\right)^2", ["\\frac19", "\\left( \\frac{1}{3} \\right)^{2}", "(1/3)^2"], ["\\frac{1}{6}"]),
    ("left-right", "\\left|-5\\right|", ["5", "|-5|", "\\left| -5 \\right|"], ["-5"]),
    ("power", "2^{10}", ["1024", "2^10", "4^5", "2^{10}"], ["1000", "2^{9}"]),
    ("power", "x^{3}", ["x^3", "x\\cdot x^2", "x^{3}"], ["x^2", "3x"]),
    ("factorial", "120", ["5!", "120"], ["4!", "5"]),
    ("binomial", "10", ["\\binom{5}{2}", "\\dbinom{5}{2}", "{5 \\choose 2}"], ["\\binom{5}{3}+1"]),
    ("complex", "3+4i", ["4i+3", "3 + 4i"], ["3-4i", "4+3i"]),
    ("complex", "i", ["i", "\\sqrt{-1}"], ["-i"]),
    ("approximation", "\\frac{1}{3}", ["0.3333", "0.333"], ["0.3", "0.34"]),
    ("approximation", "\\pi", ["3.14159", "3.14"], ["3", "3.2"]),
    ("text answer", "\\text{Tuesday}", ["\\text{Tuesday}", "\\text{tuesday}", "Tuesday"], ["\\text{Monday}"]),
    ("text answer", "\\text{even}", ["\\text{even}", "\\textbf{even}"], ["\\text{odd}"]),
    ("base-n", "1011_2", ["1011_2", "1011_{2}"], ["1101_2"]),
    ("ratio", "\\frac{3}{4}", ["3/4", "0.75"], ["4/3"]),
    ("money", "\\$1.50", ["1.50", "\\$1.5", "1.5"], ["\\$15"]),
    ("negative decimal", "-0.25", ["-\\frac{1}{4}", "-.25", "-1/4"], ["0.25", "-0.5"]),
    ("radians", "\\frac{5\\pi}{6}", ["\\frac56\\pi", "5\\pi/6"], ["\\frac{\\pi}{6}", "\\frac{6\\pi}{5}"]),
    ("line", "y = -3x + 2", ["y=2-3x", "y = -3x+2"], ["y = 3x + 2", "y = -3x - 2"]),
    ("two variables", "x^2 + 2xy + y^2", ["(x+y)^2", "y^2+2xy+x^2"], ["(x-y)^2", "x^2+y^2"]),
    ("rationalised", "\\frac{\\sqrt{2}}{4}", ["\\frac{1}{2\\sqrt{2}}", "\\frac{\\sqrt2}{4}"], ["\\frac{\\sqrt{2}}{2}"]),
    ("large integer", "1234567890", ["1,234,567,890", "1234567890"], ["1234567891"]),
    ("exponent", "5^{-2}", ["\\frac{1}{25}", "0.04", "1/25"], ["25", "-25"]),
    ("sum", "\\frac{1}{2}+\\frac{1}{3}", ["\\frac{5}{6}", "5/6"], ["\\frac{2}{5}"]),
    ("cube root", "\\sqrt[3]{27}", ["3", "27^{1/3}"], ["9"]),
    ("integer in words", "\\text{five}", ["\\text{five}"], ["\\text{six}"]),
]

# Answers in the style of MATH500's references (most are integers or simple fractions), each with a
# restyling a model writes and a near miss: the bulk of a real grading run.
TYPICAL = [
    ("27", "27", "28"), ("4", "4", "-4"), ("-2", "-2", "2"), ("0", "0", "1"),
    ("\\frac{14}{3}", "\\dfrac{14}{3}", "\\frac{3}{14}"), ("\\frac{243}{625}", "\\dfrac{243}{625}", "\\frac{243}{624}"),
    ("6 - 5i", "6-5i", "6+5i"), ("11\\sqrt2", "11\\sqrt{2}", "11\\sqrt{3}"), ("p - q", "-q + p", "q - p"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", "(3, \\pi)"), ("90^\\circ", "90^{\\circ}", "45^\\circ"),
    ("\\frac{1}{4}", "0.25", "\\frac{1}{8}"), ("10", "10", "100"), ("3", "3", "13"), ("17", "17", "71"),
    ("\\sqrt{51}", "\\sqrt{51}", "\\sqrt{52}"), ("\\frac{3}{56}", "\\frac{3}{56}", "\\frac{3}{65}"),
    ("2220", "2,220", "2200"), ("104", "104", "140"), ("5", "5", "6"), ("-\\frac{1}{3}", "-\\dfrac{1}{3}", "\\frac{1}{3}"),
    ("\\pi", "\\pi", "2\\pi"), ("1.36", "1.36", "1.63"), ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt{3}}{3}", "\\sqrt{3}"),
    ("x^2+7x+10", "(x+2)(x+5)", "(x+2)(x-5)"), ("\\$32,\\!348", "32348", "32384"), ("6+9i", "9i+6", "6-9i"),
    ("2\\sqrt{6}", "\\sqrt{24}", "6\\sqrt{2}"), ("\\text{(C)}", "C", "D"), ("-1", "-1", "1"),
    ("\\frac{7}{9}", "\\frac{14}{18}", "\\frac{9}{7}"), ("8", "8", "9"), ("1,\\!000,\\!000", "1000000", "100000"),
    ("\\frac{25}{2}", "12.5", "\\frac{2}{25}"), ("64", "2^6", "2^8"), ("(-\\infty, 1]", "(-\\infty,1]", "(-\\infty, 1)"),
]

# Generations whose extraction is the point: the last box wins, no box at all, a truncated box.
RAW = [
    ("last box wins", "5", "First guess $\\boxed{4}$, but correcting: $\\boxed{5}$."),
    ("last box wins", "4", "First guess $\\boxed{4}$, but correcting: $\\boxed{5}$."),
    ("last box wins", "\\frac{1}{2}", "Either \\boxed{\\frac{1}{3}} or, after checking, \\boxed{\\frac{1}{2}}."),
    ("last box wins", "\\frac{1}{3}", "Either \\boxed{\\frac{1}{3}} or, after checking, \\boxed{\\frac{1}{2}}."),
    ("no box", "12", "Adding them gives 12."),
    ("no box", "12", "The total is $12$."),
    ("no box", "7", "So x is 3 and the answer is 7"),
    ("no box", "3", "So x is 3 and the answer is 7"),
    ("no box", "\\frac{1}{2}", "The probability is $\\frac{1}{2}$."),
    ("fbox", "9", "Hence \\fbox{9}."),
    ("nested braces", "\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{\\sqrt{2}}{2}} is the value"),
    ("boxed with dollars", "8", "Answer: $\\boxed{8}$"),
    ("boxed text", "6", "\\boxed{\\text{The answer is } 6}"),
    ("stated answer", "(x+1)^2", "So, the final answer is x^2 + 2x + 1."),
    ("stated answer", "9\\pi", "So, the final answer is $9\\pi$."),
    ("stated answer", "6", "The answer is that x equals 6"),
    ("stated answer", "5", "The answer is 5. Wait, the answer is 6."),
    ("stated answer", "6", "The answer is 5. Wait, the answer is 6."),
    ("stated answer", "180", "The final answer is S = 180 - n"),
    ("stated answer", "\\frac{1}{2}", "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."),
    ("stated answer", "24", "So the area is 24 square centimeters."),
    ("stated answer", "\\text{Tuesday}", "The answer is Tuesday."),
    ("stated answer", "4", "**Answer:** x = 4"),
    ("stated answer", "12", "The answer is 12.\nCheck: 3 * 4 = 12, so 5 is not it"),
]


def gold(reference):
    return parse(reference if "\\boxed" in reference else "\\boxed{" + reference + "}")


def rows():
    n = 0
    for form, reference, right, wrong in FORMS:
        for answer in right + wrong:
            template = TEMPLATES[n % len(TEMPLATES)]
            n += 1
            yield form, template % answer, reference
    for reference, right, wrong in TYPICAL:
        for answer in (right, wrong):
            template = TEMPLATES[n % len(TEMPLATES)]
            n += 1
            yield "typical MATH500-style", template % answer, reference
    for form, reference, generation in RAW:
        yield form, generation, reference


def main():
    out = sys.stdout
    seen = set()
    for i, (form, generation, reference) in enumerate(rows()):
        if (generation, reference) in seen:
            continue
        seen.add((generation, reference))
        g, p = gold(reference), parse(generation)
        row = {
            "id": i,
            "form": form,
            "generation": generation,
            "reference": reference,
            "math_verify": bool(verify(g, p)),
            "gold_parsed": [str(x) for x in g],
            "pred_parsed": [str(x) for x in p],
        }
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
