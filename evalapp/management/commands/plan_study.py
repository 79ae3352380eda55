"""Plan a study from the command line: the planner page's code path (evalapp.planner), its table printed."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evalapp.models import Study
from evalapp.planner import (COMPONENT_FIELDS, MODES, PAIRWISE_FIELDS, PlanError, PlanRequest, likert_criteria, plan,
                             power_plot, table_text)


def _entered(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise CommandError(f"--entered takes name=value pairs separated by commas, not {part!r}.") from None
    return out


def _prompts(text: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
    except ValueError:
        raise CommandError(f"--prompts takes whole numbers separated by commas, not {text!r}.") from None


class Command(BaseCommand):
    help = ("Simulate a study's design and print the power to detect a difference on each criterion (and, for "
            "scores, the spread of Krippendorff's alpha), from the study's ratings so far or entered values.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("study_id", type=int)
        parser.add_argument("--criterion", action="append", default=[],
                            help="A likert criterion's key (repeat for more); default every likert criterion.")
        parser.add_argument("--mode", choices=MODES, default="scores")
        parser.add_argument("--arm-a", type=int, help="Arm A's id (the reference); default the study's first arm.")
        parser.add_argument("--arm-b", type=int, help="Arm B's id (compared with A); default its second arm.")
        parser.add_argument("--effect", type=float, default=0.5,
                            help="The difference to detect, B - A: scale points, or the log-strength difference.")
        parser.add_argument("--prompts", default="20,40,80,160", help="Numbers of prompts, comma-separated.")
        parser.add_argument("--raters-per-response", type=int, default=3)
        parser.add_argument("--raters", type=int, default=10, help="Raters in the pool (scores).")
        parser.add_argument("--sims", type=int, default=500, help="Simulated studies per number of prompts.")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--alpha", type=float, default=0.05, help="Significance level.")
        parser.add_argument("--entered", metavar="NAME=VALUE,...",
                            help=f"Use these values instead of the pilot; the rest take their defaults. Scores: "
                                 f"{', '.join(COMPONENT_FIELDS)}; pairwise: {', '.join(PAIRWISE_FIELDS)}.")
        parser.add_argument("--json", action="store_true", help="Print the whole result as JSON.")
        parser.add_argument("--plot", type=Path, metavar="FILE.png", help="Write the power plot here.")

    def handle(self, *args, **options) -> None:
        study = Study.objects.filter(id=options["study_id"]).first()
        if study is None:
            raise CommandError(f"No study {options['study_id']}.")
        arms = list(study.arms.order_by("id").values_list("id", flat=True))
        arm_a = options["arm_a"] if options["arm_a"] is not None else (arms[0] if arms else None)
        arm_b = options["arm_b"] if options["arm_b"] is not None else (arms[1] if len(arms) > 1 else None)
        if options["mode"] == "pairwise" and options["criterion"]:
            raise CommandError("--criterion picks 1-10 criteria (scores mode); pairwise mode plans every question "
                               "of the study's pairwise phase from its judgments, or one line from --entered values.")
        criteria = options["criterion"] or [c["key"] for c in likert_criteria(study)]
        req = PlanRequest(mode=options["mode"], criteria=tuple(criteria) if options["mode"] == "scores" else (),
                          arm_a=arm_a, arm_b=arm_b, source="entered" if options["entered"] is not None else "pilot",
                          effect=options["effect"], prompts=_prompts(options["prompts"]),
                          raters_per_response=options["raters_per_response"], n_raters=options["raters"],
                          sims=options["sims"], seed=options["seed"], alpha=options["alpha"],
                          entered=_entered(options["entered"] or ""))
        try:
            result = plan(study, req)
        except PlanError as exc:
            hint = " (pass --entered name=value,... to plan from entered values)" if exc.pilot else ""
            raise CommandError(f"{exc}{hint}") from None
        if options["plot"]:
            options["plot"].write_bytes(power_plot(result))
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, default=str))
            return
        inputs = result["inputs"]
        self.stdout.write(f"{study.title}: {inputs['arm_b']['label']} against {inputs['arm_a']['label']}, effect "
                          f"{inputs['effect']:g}, {inputs['sims']} simulations, seed {inputs['seed']}, source "
                          f"{inputs['source']}")
        for c in result["criteria"]:
            values = c.get("components") or c.get("model")
            shown = ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k not in ("low", "high"))
            pilot = f" (pilot effect {c['pilot']['effect']:.3f})" if c["pilot"] else ""
            self.stdout.write(f"  {c['key']}: {shown}{pilot}")
        self.stdout.write(table_text(result))
        self.stdout.write(f"Again: {result['command']}")
