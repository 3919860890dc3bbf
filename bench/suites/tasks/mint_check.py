"""MINT's success checks, per task type, written after the benchmark's published rules.

* reasoning (GSM8K, MATH, HotpotQA): numbers match within 5 % of the
  reference; otherwise the (lower-cased) reference must appear in the answer;
* multiple choice (MMLU): the chosen letter, or the correct option's text
  without any wrong option's text;
* TheoremQA: the answer is parsed as a number, a list of numbers, a boolean or
  an option, and compared by the task's ``answer_type`` (integers rounded,
  floats within 4 %, lists element-wise after sorting);
* code generation (HumanEval, MBPP): the solution code followed by the task's
  tests runs without error (10 s limit), in a sandboxed subprocess.

Answers are parsed with ``ast.literal_eval`` and a small arithmetic
evaluator, never ``eval``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

_OPTION_SPLIT = re.compile(r"\s*,\s*(?=[A-Za-z]\s*\))")


def _float(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def reasoning_success(answer: str, reference: Any) -> bool:
    ref = str(reference).strip().lower()
    ans = answer.strip().lower()
    a, r = _float(ans), _float(ref)
    if a is not None and r is not None:
        return abs(a - r) <= 0.05 * abs(r)
    return ref in ans


def parse_options(prompt: str) -> dict[str, str]:
    """``Options: A ) 6 , B ) 121 , ...`` -> {"a": "6", "b": "121", ...}."""
    if "Options:" not in prompt:
        return {}
    tail = prompt.split("Options:")[-1].strip()
    options = {}
    for part in _OPTION_SPLIT.split(tail):
        letter, _, text = part.partition(")")
        letter = letter.strip().lower()
        if len(letter) == 1 and letter.isalpha():
            options[letter] = text.strip().strip(".").lower()
    return options


def multiple_choice_success(answer: str, reference: str, prompt: str) -> bool:
    ans = answer.strip().lower()
    ref = reference.strip().lower()
    chosen = None
    if re.fullmatch(r"\(?([a-z])\)?\.?", ans):
        chosen = ans.strip("().")
    else:
        m = re.search(r"(?:^|[\s(])([a-z])\s?\)", ans)
        if m:
            chosen = m.group(1)
    if chosen is not None:
        return chosen == ref
    options = parse_options(prompt)
    correct = options.get(ref)
    if not correct:
        return False
    wrong = [text for letter, text in options.items() if letter != ref and text and text not in correct]
    if any(text in ans for text in wrong):
        return False
    return correct in ans or reasoning_success(ans, correct)


# --------------------------------------------------------------------------- TheoremQA

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}


def _arith(node: ast.AST) -> Any:
    """Numbers, lists/tuples of numbers, booleans and + - * / ** (with math.pow / math.sqrt) only."""
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool, str)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_arith(e) for e in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 400:
            raise ValueError("exponent too large")
        return _BIN[type(node.op)](left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("pow", "sqrt"):
        args = [_arith(a) for a in node.args]
        return getattr(math, node.func.attr)(*args)
    raise ValueError(f"not a literal answer: {ast.dump(node)[:60]}")


def theoremqa_prediction(solution: str) -> Any:
    """The answer as a value: number, list, bool, or an option string like "(a)"; None when unreadable."""
    p = solution.strip()
    for sep in ("=", "≈"):
        if sep in p:
            p = p.split(sep)[-1].strip()
    for ch in ("`", "$", "°"):
        p = p.replace(ch, "")
    low = p.lower().strip()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if "True" in p or "False" in p:
        return "True" in p
    p = p.replace("approximately", "").strip()
    if " or " in p:
        p = p.split(" or ")[0]
    m = re.fullmatch(r"([-+]?[\d,]*\.?\d+)\s*[^\d\s\[\]]{1,12}", p)  # a number followed by a unit
    if m:
        p = m.group(1)
    m = re.fullmatch(r"[^\d\s\[\]-]{1,12}\s*([-+]?[\d,]*\.?\d+)", p)  # a unit or symbol before a number
    if m:
        p = m.group(1)
    p = re.sub(r"10\^(-?\d+)", r"math.pow(10, \1)", p)
    p = p.replace(" x ", "*").replace(" × ", "*")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", p):
        p = p.replace(",", "")
    opt = re.search(r"\(?\b([a-d])\s?\)", p.lower())
    if opt or p.lower().strip() in ("a", "b", "c", "d"):
        letter = opt.group(1) if opt else p.lower().strip()
        return f"({letter})"
    try:
        return _arith(ast.parse(p or "0", mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None


def _close(pred: Any, gt: Any) -> bool:
    if isinstance(pred, bool) or not isinstance(pred, (int, float)):
        return False
    if isinstance(gt, float):
        return abs(pred - gt) <= abs(gt) * 0.04
    return round(pred) == gt


def theoremqa_success(solution: str, reference: Any, answer_type: str | None) -> bool:
    pred = theoremqa_prediction(solution)
    if pred is None:
        return False
    if answer_type in ("bool", "option", "Option"):
        return pred == reference or pred == f"({reference})"
    if answer_type in ("integer", "float"):
        return _close(pred, reference)
    if answer_type in ("list of integer", "list of float"):
        if not isinstance(pred, list) or not isinstance(reference, list) or len(pred) != len(reference):
            return False
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in pred):
            return False
        return all(_close(p, g) for p, g in zip(sorted(pred), sorted(reference)))
    return False


def code_program(solution: str, tests: str) -> str:
    """The program that decides a code task: the solution (fences removed), then the tests."""
    from aios.bench.suites.tasks.code import fenced_blocks

    blocks = fenced_blocks(solution)
    code = blocks[0] if blocks else solution
    return code + "\n" + tests
