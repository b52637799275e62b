#!/usr/bin/env python3
"""The model-strong task of docs/continuum-real.md for SmolLM2-135M-Instruct: capitals, in demonstrations
the model already finds likely because it wrote them, made partly noisy as chain-of-thought data is.

    scripts/make_real_tasks.py prompts DIR            # DIR/prompts.jsonl (train), DIR/eval.jsonl (held out)
    host eval --model M --data DIR/prompts.jsonl --evaluator exact_match --chat-template --temperature 0 \
        --max-new-tokens 16 --out DIR/greedy.jsonl     # the model's own answers
    scripts/make_real_tasks.py demonstrations DIR     # DIR/train.jsonl from DIR/greedy.jsonl

The reference is the sentence the model itself writes ("The capital of France is Paris."). The
demonstrations are the model's greedy answers that match it (rejection sampling, as STaR and RFT build
self-generated data), and in a fifth of them, chosen by a fixed seed, the city is replaced by another
country's capital: a wrong answer inside a sentence the model finds likely.

    scripts/make_real_tasks.py addition DIR           # the intermediate task: two-digit sums

`addition` writes DIR/train.jsonl (200 sums asked as "What is 34 + 58?", answered "34 + 58 = 92.") and
DIR/eval.jsonl (100 other sums whose reference is the bare answer, "92", as the `math` evaluator reads
it). Stdlib only.
"""
import json
import random
import sys
from pathlib import Path

CAPITALS = """France Paris|Japan Tokyo|Italy Rome|Germany Berlin|Spain Madrid|Russia Moscow|China Beijing|
Egypt Cairo|Canada Ottawa|Greece Athens|England London|Portugal Lisbon|Austria Vienna|Poland Warsaw|
Norway Oslo|Sweden Stockholm|Ireland Dublin|Kenya Nairobi|Peru Lima|Cuba Havana|Finland Helsinki|
Denmark Copenhagen|Hungary Budapest|Belgium Brussels|Thailand Bangkok|Vietnam Hanoi|Iran Tehran|
Iraq Baghdad|Syria Damascus|Lebanon Beirut|Jordan Amman|Turkey Ankara|Ukraine Kyiv|Romania Bucharest|
Bulgaria Sofia|Serbia Belgrade|Croatia Zagreb|Slovakia Bratislava|Switzerland Bern|Netherlands Amsterdam|
Argentina Buenos Aires|Chile Santiago|Colombia Bogota|Venezuela Caracas|Ecuador Quito|Bolivia Sucre|
Uruguay Montevideo|Paraguay Asuncion|Mexico Mexico City|Brazil Brasilia|Australia Canberra|
New Zealand Wellington|India New Delhi|Pakistan Islamabad|Bangladesh Dhaka|Nepal Kathmandu|
Afghanistan Kabul|Mongolia Ulaanbaatar|South Korea Seoul|North Korea Pyongyang|Philippines Manila|
Indonesia Jakarta|Malaysia Kuala Lumpur|Singapore Singapore|Cambodia Phnom Penh|Laos Vientiane|
Myanmar Naypyidaw|Sri Lanka Colombo|Saudi Arabia Riyadh|Yemen Sanaa|Oman Muscat|Qatar Doha|
Kuwait Kuwait City|Israel Jerusalem|Morocco Rabat|Algeria Algiers|Tunisia Tunis|Libya Tripoli|
Sudan Khartoum|Ethiopia Addis Ababa|Somalia Mogadishu|Uganda Kampala|Tanzania Dodoma|Rwanda Kigali|
Nigeria Abuja|Ghana Accra|Senegal Dakar|Mali Bamako|Niger Niamey|Chad N'Djamena|Cameroon Yaounde|
Angola Luanda|Zambia Lusaka|Zimbabwe Harare|Mozambique Maputo|Madagascar Antananarivo|Namibia Windhoek|
Botswana Gaborone|Iceland Reykjavik|Estonia Tallinn|Latvia Riga|Lithuania Vilnius|Belarus Minsk|
Moldova Chisinau|Georgia Tbilisi|Armenia Yerevan|Azerbaijan Baku|Kazakhstan Astana|Uzbekistan Tashkent|
Albania Tirana|Slovenia Ljubljana|Luxembourg Luxembourg|Malta Valletta|Cyprus Nicosia|Jamaica Kingston|
Haiti Port-au-Prince|Panama Panama City|Costa Rica San Jose|Honduras Tegucigalpa|Nicaragua Managua|
Guatemala Guatemala City|El Salvador San Salvador|Scotland Edinburgh|Wales Cardiff|Czech Republic Prague"""


def countries():
    pairs = []
    for item in CAPITALS.replace("\n", "").split("|"):
        words = item.split(" ")
        # The country is the longest prefix that leaves a city: written so every name is one token group.
        for cut in range(1, len(words)):
            country, city = " ".join(words[:cut]), " ".join(words[cut:])
            if country in {"New", "South", "North", "Sri", "Saudi", "Czech", "Costa", "El"}:
                continue
            pairs.append((country, city))
            break
    return pairs


def row(country, city):
    return {"prompt": f"What is the capital of {country}?", "response": f"The capital of {country} is {city}."}


def write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main():
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "prompts":
        folder.mkdir(parents=True, exist_ok=True)
        pairs = countries()
        random.Random(2026).shuffle(pairs)
        held_out = 40
        write(folder / "prompts.jsonl", [row(*p) for p in pairs[held_out:]])
        write(folder / "eval.jsonl", [row(*p) for p in pairs[:held_out]])
    elif command == "demonstrations":
        rng = random.Random(7)
        cities = [city for _, city in countries()]
        kept, noisy = [], 0
        for line in open(folder / "greedy.jsonl"):
            r = json.loads(line)
            if r["scores"][0]["exact_match"] != 1.0:
                continue
            answer = r["generations"][0].strip()
            if rng.random() < 0.2:
                country = r["prompt"].removeprefix("What is the capital of ").removesuffix("?")
                right = r["reference"].removeprefix(f"The capital of {country} is ").removesuffix(".")
                wrong = rng.choice([c for c in cities if c != right])
                answer = answer.replace(right, wrong)
                noisy += 1
            kept.append({"prompt": r["prompt"], "response": answer})
        write(folder / "train.jsonl", kept)
        print(f"{len(kept)} demonstrations, {noisy} with a wrong city", file=sys.stderr)
    elif command == "addition":
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(1)
        train = [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(200)]
        write(folder / "train.jsonl", [{"prompt": f"What is {a} + {b}?", "response": f"{a} + {b} = {a + b}."} for a, b in train])
        seen, held_out, rng = set(train), [], random.Random(99)
        while len(held_out) < 100:
            pair = (rng.randint(10, 99), rng.randint(10, 99))
            if pair not in seen:
                seen.add(pair)
                held_out.append(pair)
        write(folder / "eval.jsonl", [{"prompt": f"What is {a} + {b}?", "response": str(a + b)} for a, b in held_out])
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
