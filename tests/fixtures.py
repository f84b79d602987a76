"""Small data sets in their official formats, for the tasks whose data is not in ../shared/data:
MLQA (SQuAD JSON named {split}-context-{lang}-question-{lang}.json under MLQA_V1/{dev,test}/), BUCC 2018
({lang}-en.{split}.{lang} / .en with `id<TAB>sentence` lines, .gold with `id_xx<TAB>id_en`) and HellaSwag
(jsonl with ctx, endings, label) PAN-X (XTREME's xtreme/panx/{split}-{lang}.tsv, `token<TAB>TAG`) and SQuAD v2.0 (squad/*-v2.0.json)."""

from __future__ import annotations

import json
from pathlib import Path

MLQA_PARAGRAPHS = {
    "en": [
        (
            "The Rhine flows through Basel and Cologne before it reaches the North Sea near Rotterdam.",
            [
                ("Which sea does the Rhine reach?", "the North Sea"),
                ("Which city lies near its mouth?", "Rotterdam"),
            ],
        ),
        (
            "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
            [("When did Curie win the chemistry prize?", "1911")],
        ),
    ],
    "de": [
        (
            "Der Rhein fließt durch Basel und Köln, bevor er bei Rotterdam die Nordsee erreicht.",
            [
                ("Welches Meer erreicht der Rhein?", "die Nordsee"),
                ("Welche Stadt liegt an der Mündung?", "Rotterdam"),
            ],
        ),
        (
            "Marie Curie erhielt 1903 den Nobelpreis für Physik und 1911 den für Chemie.",
            [("Wann erhielt Curie den Chemiepreis?", "1911")],
        ),
    ],
    "zh": [
        (
            "莱茵河流经巴塞尔和科隆，在鹿特丹附近注入北海。",
            [("莱茵河注入哪个海？", "北海"), ("哪个城市在河口附近？", "鹿特丹")],
        ),
        (
            "居里夫人于1903年获得诺贝尔物理学奖，1911年获得化学奖。",
            [("居里夫人哪一年获得化学奖？", "1911年")],
        ),
    ],
}


def _squad(paragraphs, language: str) -> dict:
    out = []
    for p, (context, questions) in enumerate(paragraphs):
        qas = [
            {
                "id": f"{language}-{p}-{q}",
                "question": question,
                "answers": [{"text": answer, "answer_start": context.index(answer)}],
            }
            for q, (question, answer) in enumerate(questions)
        ]
        out.append({"title": f"article {p}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.0", "data": out}


def write_mlqa(root: Path) -> None:
    for split in ("dev", "test"):
        folder = root / "MLQA_V1" / split
        folder.mkdir(parents=True, exist_ok=True)
        for language, paragraphs in MLQA_PARAGRAPHS.items():
            path = folder / f"{split}-context-{language}-question-{language}.json"
            path.write_text(json.dumps(_squad(paragraphs, language), ensure_ascii=False), encoding="utf-8")


BUCC_PAIRS = {
    "de": [
        ("Das Haus ist groß.", "The house is big."),
        ("Ich trinke gern Kaffee.", "I like drinking coffee."),
        ("Der Zug kommt um acht Uhr an.", "The train arrives at eight o'clock."),
        ("Wir wohnen in Berlin.", "We live in Berlin."),
        ("Die Katze schläft.", "The cat is sleeping."),
    ],
    "fr": [
        ("La maison est grande.", "The house is big."),
        ("J'aime boire du café.", "I like drinking coffee."),
        ("Le train arrive à huit heures.", "The train arrives at eight o'clock."),
        ("Nous habitons à Paris.", "We live in Paris."),
        ("Le chat dort.", "The cat is sleeping."),
    ],
}
BUCC_NOISE = {
    "de": ["Der Himmel ist heute grau.", "Das Buch liegt auf dem Tisch.", "Das Buch liegt auf dem Tisch."],
    "fr": ["Le ciel est gris aujourd'hui.", "Le livre est sur la table.", "Le livre est sur la table."],
}
BUCC_EN_NOISE = ["Stock markets fell sharply on Monday.", "The committee meets every Tuesday."]


def write_bucc(root: Path, split: str = "test") -> None:
    folder = root / "bucc2018"
    folder.mkdir(parents=True, exist_ok=True)
    for language, pairs in BUCC_PAIRS.items():
        source = [(f"{language}-{i:09d}", s) for i, (s, _) in enumerate(pairs)]
        source += [(f"{language}-{len(pairs) + i:09d}", s) for i, s in enumerate(BUCC_NOISE[language])]
        target = [(f"en-{i:09d}", t) for i, (_, t) in enumerate(pairs)]
        target += [(f"en-{len(pairs) + i:09d}", t) for i, t in enumerate(BUCC_EN_NOISE)]
        (folder / f"{language}-en.{split}.{language}").write_text(
            "".join(f"{i}\t{s}\n" for i, s in source), encoding="utf-8"
        )
        (folder / f"{language}-en.{split}.en").write_text(
            "".join(f"{i}\t{t}\n" for i, t in target), encoding="utf-8"
        )
        (folder / f"{language}-en.{split}.gold").write_text(
            "".join(f"{language}-{i:09d}\ten-{i:09d}\n" for i in range(len(pairs))), encoding="utf-8"
        )


HELLASWAG_STEMS = [
    (
        "A man is standing on a ladder next to a house. He",
        [
            "paints the wall with a roller.",
            "eats the ladder.",
            "swims across the roof.",
            "turns into a cloud.",
        ],
        0,
    ),
    (
        "A woman puts a pan on the stove. She",
        [
            "sings to the moon.",
            "cracks two eggs into it.",
            "folds the stove in half.",
            "rides the pan to work.",
        ],
        1,
    ),
    (
        "Two kids are kicking a ball in a park. One of them",
        ["reads the ball aloud.", "bakes the grass.", "scores a goal between two trees.", "mails the park."],
        2,
    ),
    (
        "A dog runs towards the lake. It",
        ["files its taxes.", "knits a sweater.", "paints the sky green.", "jumps into the water."],
        3,
    ),
]


def write_hellaswag(root: Path) -> None:
    folder = root / "hellaswag"
    folder.mkdir(parents=True, exist_ok=True)
    for name, repeat in (("hellaswag_train.jsonl", 10), ("hellaswag_val.jsonl", 3)):
        lines = [
            json.dumps({"ind": i, "ctx": ctx, "endings": endings, "label": label})
            for i, (ctx, endings, label) in enumerate(HELLASWAG_STEMS * repeat)
        ]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


PANX_SENTENCES = {
    "en": [
        [("Angela", "B-PER"), ("Merkel", "I-PER"), ("visited", "O"), ("Paris", "B-LOC"), (".", "O")],
        [
            ("The", "O"),
            ("United", "B-ORG"),
            ("Nations", "I-ORG"),
            ("met", "O"),
            ("in", "O"),
            ("Geneva", "B-LOC"),
        ],
        [("Marie", "B-PER"), ("Curie", "I-PER"), ("worked", "O"), ("in", "O"), ("Warsaw", "B-LOC")],
        [
            ("Siemens", "B-ORG"),
            ("opened", "O"),
            ("an", "O"),
            ("office", "O"),
            ("in", "O"),
            ("Lagos", "B-LOC"),
        ],
    ],
    "de": [
        [("Angela", "B-PER"), ("Merkel", "I-PER"), ("besuchte", "O"), ("Paris", "B-LOC"), (".", "O")],
        [
            ("Die", "O"),
            ("Vereinten", "B-ORG"),
            ("Nationen", "I-ORG"),
            ("tagten", "O"),
            ("in", "O"),
            ("Genf", "B-LOC"),
        ],
    ],
    "zh": [
        [("默克尔", "B-PER"), ("访问", "O"), ("了", "O"), ("巴黎", "B-LOC")],
        [("联合国", "B-ORG"), ("在", "O"), ("日内瓦", "B-LOC"), ("开会", "O")],
    ],
}


def write_panx(root: Path) -> None:
    folder = root / "xtreme" / "panx"
    folder.mkdir(parents=True, exist_ok=True)
    for language, sentences in PANX_SENTENCES.items():
        for split, repeat in (("train", 12), ("dev", 3), ("test", 3)):
            blocks = [
                "\n".join(f"{token}\t{tag}" for token, tag in sentence) for sentence in sentences * repeat
            ]
            (folder / f"{split}-{language}.tsv").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


SQUAD_V2_PARAGRAPHS = [
    (
        "The Rhine flows through Basel and Cologne before it reaches the North Sea near Rotterdam.",
        [("Which sea does the Rhine reach?", "the North Sea"), ("Which river flows through Paris?", None)],
    ),
    (
        "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
        [("When did Curie win the chemistry prize?", "1911"), ("When did Curie win a Fields Medal?", None)],
    ),
]


def write_squad_v2(root: Path) -> None:
    """SQuAD v2.0 JSON: answerable questions, and unanswerable ones (is_impossible, no answers)."""
    folder = root / "squad"
    folder.mkdir(parents=True, exist_ok=True)
    for name, repeat in (("train-v2.0.json", 12), ("dev-v2.0.json", 3)):
        paragraphs = []
        for r in range(repeat):
            for p, (context, questions) in enumerate(SQUAD_V2_PARAGRAPHS):
                qas = [
                    {
                        "id": f"{r}-{p}-{q}",
                        "question": f"{question} ({r})",  # distinct questions: no two splits share one
                        "is_impossible": answer is None,
                        "answers": []
                        if answer is None
                        else [{"text": answer, "answer_start": context.index(answer)}],
                    }
                    for q, (question, answer) in enumerate(questions)
                ]
                paragraphs.append({"context": context, "qas": qas})
        document = {"version": "v2.0", "data": [{"title": "fixture", "paragraphs": paragraphs}]}
        (folder / name).write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def write_all(root: Path) -> Path:
    write_squad_v2(root)
    write_panx(root)
    write_mlqa(root)
    write_bucc(root)
    write_hellaswag(root)
    return root
