"""Set up the whole demo, then serve the site (long because it is every step of a study, in the order a
researcher takes them, one method each, in one command).

Accounts and a study of 20 test-split CounselChat questions; a LoRA adapter trained on CounselChat's
training questions (or reused from var/demo-adapter); both arms generated with the bundled model through
the same task code a GPU worker runs; consent, calibration items and balanced rating queues for the
three raters; a pairwise phase on the same responses, open; with --simulate, simulated ratings and
pairwise judgments (labelled everywhere) so the results pages have something to show; the bundled model
as an LLM judge of every response (the same task again). `--preset epitome` (or any
evalapp.rubric_presets key) runs the same demo with that protocol's rubric, as a study of its own.
`--no-serve` stops before serving: the test suite runs it so the demo cannot rot.
"""

import argparse
import contextlib
import json
import secrets
import sys
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from evalapp.models import Arm, PairJudgment, PairVerdict, PairwisePhase, Rating, Response, Score, Study
from evalapp.pair_rubric import DEFAULT_CRITERIA, FIRST, SECOND, TIE
from evalapp.rubric_presets import DEFAULT_PRESET, PRESETS
from evalapp.services import arm_create, study_create, study_import_prompts
from modelserver import dispatch, judge_services
from modelserver.corpus import COUNSELCHAT_QUESTIONS, best_counselchat_answer
from modelserver.judge_models import Judge, JudgeAnswer, JudgeKind, JudgeMode, JudgeRun
from modelserver.services import GenerationError, generation_progress, generation_run_create, generation_runs_abandon
from raters import services as rater_services
from raters.models import Assignment, CalibrationItem, Consent, PairAssignment, Role, StudyMembership

DEMO_TITLE = "Demo: CounselChat support responses"
DISMISSIVE = "Just think positive and stop worrying so much."
DEMO_PROMPTS = 20
DEMO_SEED = 0
JUDGE_NAME = "SmolLM2 judge (bundled)"
ACCOUNTS = [
    ("demo-researcher", None),
    ("demo-rater-1", Role.RATER),
    ("demo-rater-2", Role.RATER),
    ("demo-rater-3", Role.RATER),
    ("demo-adjudicator", Role.ADJUDICATOR),
]
CONSENT_TEXT = (
    "You will read questions people asked about their mental health and replies written by chatbots, and answer "
    "a few questions about each reply. Some questions describe distressing situations. Your scores are research "
    "data, stored under a pseudonym. You may stop and withdraw at any time."
)


class Command(BaseCommand):
    help = "Prepare the demo (accounts, study, adapter, both arms, rating queues) and serve the site."

    def add_arguments(self, parser):
        parser.add_argument("--no-serve", action="store_true", help="Prepare everything, then stop.")
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--simulate", action="store_true", help="Fill the study with SIMULATED ratings.")
        parser.add_argument("--train-steps", type=int, default=50, help="LoRA steps of 4 x 256 tokens (default 50).")
        parser.add_argument("--max-new-tokens", type=int, default=96)
        parser.add_argument("--preset", default=DEFAULT_PRESET, choices=list(PRESETS),
                            help="The rubric's protocol preset (default: EmpathEval's two 1-10 scales).")
        parser.add_argument("--quick", action="store_true",
                            help="Tiny settings for the test suite: 2 training steps, short replies, no judge.")
        parser.add_argument("--judge", action=argparse.BooleanOptionalAction, default=None,
                            help="Judge every response with the bundled model (default: unless --quick).")

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["no_serve"]:
            raise CommandError("The demo serves with Django's development server; run it with DEBUG=true.")
        if options["quick"]:
            # The judge reads 40 x (criteria + 1) long prompts, about a minute on 2 cores: only when asked.
            options.update(train_steps=2, max_new_tokens=8, judge=options["judge"] or False)
        started = time.monotonic()
        passwords, study, users = self._accounts_and_study(options["preset"])
        adapter_dir = self._adapter(study, options)
        self._arms(study, adapter_dir, options["max_new_tokens"])
        self._generate(study, users["demo-researcher"])
        self._rating(study, users)
        if options["simulate"]:
            self._simulate(study)
        judge = self._judge(study, users["demo-researcher"]) if options["judge"] is not False else None
        self.stdout.write(f"\nDemo ready in {time.monotonic() - started:.0f} s.")
        self.stdout.write("\nDemo accounts (passwords are new on every run):")
        for username, role in ACCOUNTS:
            self.stdout.write(f"  {username:<18} {passwords[username]:<16} {role or 'researcher (owner)'}")
        self.stdout.write(f"\nDemo study #{study.id}: {study.title} ({study.prompts.count()} prompts, "
                          f"{study.arms.count()} arms, {Rating.objects.filter(response__prompt__study=study).count()} "
                          "ratings)")
        if judge is not None:
            self.stdout.write(f"Judge validation report: /studies/{study.id}/judges/{judge.id}/report/")
        if options["no_serve"]:
            return
        self.stdout.write(self.style.SUCCESS(f"\nOpen http://{options['addrport']}/ and log in as demo-researcher.\n"))
        call_command("runserver", options["addrport"], use_reloader=False)

    @transaction.atomic
    def _accounts_and_study(self, preset: str):
        User = get_user_model()
        passwords, users = {}, {}
        for username, _role in ACCOUNTS:
            user, _ = User.objects.get_or_create(username=username)
            passwords[username] = secrets.token_urlsafe(9)
            user.set_password(passwords[username])
            user.save(update_fields=["password"])
            users[username] = user
        owner = users["demo-researcher"]
        rater_services.researcher_add(user=owner)  # so the demo's researcher can also start a study of their own
        title = DEMO_TITLE if preset == DEFAULT_PRESET else f"{DEMO_TITLE} ({PRESETS[preset]['name']})"
        study = Study.objects.filter(owner=owner, title=title).first()
        if study is None:
            study = study_create(
                owner=owner,
                title=title,
                description=f"{DEMO_PROMPTS} test-split CounselChat questions (seed {DEMO_SEED}), rated blind.",
                preset=preset,
            )
        for username, role in ACCOUNTS:
            if role is not None:
                StudyMembership.objects.get_or_create(
                    study=study, user=users[username], role=role, defaults={"pseudonym": username.replace("demo-", "")}
                )
        report = study_import_prompts(
            study=study,
            data=COUNSELCHAT_QUESTIONS.read_bytes(),
            filename=COUNSELCHAT_QUESTIONS.name,
            split="test",
            sample=DEMO_PROMPTS,
            seed=DEMO_SEED,
        )
        if not report.ok:
            raise CommandError("The bundled CounselChat file failed to import: " + "; ".join(map(str, report.errors)))
        return passwords, study, users

    def _adapter(self, study, options) -> str:
        """Train the demo adapter once; later runs reuse it when its settings match."""
        from modelserver.training import TrainingConfig, train_adapter
        from modelserver.training_services import adapter_register, check_adapter_for_study

        out = Path(settings.VAR_DIR) / ("demo-adapter-quick" if options["quick"] else "demo-adapter")
        # r 8 on q/v (about 4 s a step of 4 x 256 on 2 idle cores, ~15% faster than all-linear) and a
        # higher learning rate than the default, so 50 steps fit the 5-minute budget and still move
        # the model; one mid-way and one final validation give the loss plot its curve.
        config = TrainingConfig(
            base="bundled",
            max_steps=options["train_steps"],
            rank=8,
            alpha=16,
            target_modules=["q_proj", "v_proj"],
            learning_rate=5e-4,
            batch_size=4,
            max_length=64 if options["quick"] else 256,
            eval_every=0 if options["quick"] else 25,
            eval_max_examples=16,
            perplexity_max_examples=4 if options["quick"] else 16,
            exclude_question_ids=list(study.prompts.values_list("external_id", flat=True)),
            seed=DEMO_SEED,
        )
        result_file = out / "training_result.json"
        if result_file.exists() and json.loads(result_file.read_text())["config"] == config.to_dict():
            self.stdout.write(f"Reusing the demo adapter in {out}.")
        else:
            self.stdout.write(f"Training the demo adapter: {config.max_steps} LoRA steps on CounselChat's training "
                              "questions (the study's prompts are excluded)...")
            if out.exists():
                import shutil

                shutil.rmtree(out)
            last = [0.0]

            def progress(p):
                if p.phase == "train" and time.monotonic() - last[0] > 10:
                    last[0] = time.monotonic()
                    self.stdout.write(f"  step {p.step}/{p.total_steps} loss {p.loss or 0:.3f} "
                                      f"({p.tokens_per_s or 0:.0f} tokens/s, ETA {p.eta_s or 0:.0f} s)")

            result = train_adapter(config, None, out, progress)
            self.stdout.write(f"  held-out perplexity: base {result.perplexity['base']:.2f} -> "
                              f"adapter {result.perplexity['adapter']:.2f} ({result.train_seconds:.0f} s of training)")
        check_adapter_for_study(str(out), study)
        adapter_register(path=str(out), user=study.owner, name="demo CounselChat LoRA")
        return str(out)

    def _arms(self, study, adapter_dir: str, max_new_tokens: int) -> None:
        params = {"max_new_tokens": max_new_tokens, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1,
                  "do_sample": True}
        wanted = {"fine-tuned": adapter_dir, "baseline": ""}
        for label, adapter in wanted.items():
            arm = Arm.objects.filter(study=study, label=label).first()
            if arm is not None and (arm.adapter != adapter or arm.generation_params != params):
                # Different settings mean different responses: start the arm afresh.
                arm.delete()
                arm = None
            if arm is None:
                arm_create(study=study, label=label, base_model="bundled", adapter=adapter, generation_params=params)

    def _generate(self, study, owner) -> None:
        # This process is the demo's only worker (there is no broker): a run still active now was left by
        # an earlier demo that stopped midway, and nothing else will ever finish it.
        generation_runs_abandon(study=study, reason="Interrupted: the demo stopped before this run finished.")
        missing = study.prompts.count() * study.arms.count() - Response.objects.filter(prompt__study=study).count()
        if not missing:
            # Nothing to do: a run now would only add a row that says it generated nothing.
            self.stdout.write("Reusing the demo's generated responses.")
            return
        self.stdout.write(f"Generating {missing} missing responses with the bundled model...")
        t0 = time.monotonic()
        # Run here, once, through the same task a GPU worker runs: no background thread races it.
        with dispatch.inline(), self._progress_bar(missing):
            try:
                run = generation_run_create(study=study, user=owner, seed=DEMO_SEED, batch_size=8)
            except GenerationError as exc:
                raise CommandError(f"Cannot generate: {exc}") from exc
        run.refresh_from_db()
        if run.status != "succeeded":
            raise CommandError(f"Generation failed: {run.error}")
        self.stdout.write(f"  {run.done} of {run.total} responses present ({time.monotonic() - t0:.0f} s).")

    def _judge(self, study, owner) -> Judge:
        """The bundled model as a judge of every response on the rubric and the unsafe question, made once;
        as with generation, a run still active was left by an earlier demo that stopped midway."""
        judge = Judge.objects.filter(study=study, name=JUDGE_NAME).first()
        if judge is not None and judge.templates != judge_services.current_templates():
            judge.delete()  # its answers came from another prompt and would not compare with new ones
            judge = None
        judge = judge or judge_services.judge_create(study=study, user=owner, name=JUDGE_NAME, kind=JudgeKind.LOCAL,
                                                     model="bundled", safety=True, batch_size=8, seed=DEMO_SEED)
        judge_services.judge_runs_abandon(study=study, reason="Interrupted: the demo stopped before this run finished.")
        n_responses = Response.objects.filter(prompt__study=study).count()
        n_questions = len(judge_services.judge_questions(judge, JudgeMode.ITEMS))
        if JudgeAnswer.objects.filter(judge=judge, response__isnull=False).count() >= n_responses * n_questions:
            self.stdout.write("Reusing the demo judge's answers.")
            return judge
        self.stdout.write(f"Judging {n_responses} responses on {n_questions} questions with {JUDGE_NAME}...")
        t0 = time.monotonic()
        with dispatch.inline(), self._progress_bar(n_responses, "judge"):
            try:
                run = judge_services.judge_run_create(judge=judge, user=owner, mode=JudgeMode.ITEMS)
            except judge_services.JudgeError as exc:
                raise CommandError(f"Cannot judge: {exc}") from exc
        run.refresh_from_db()
        if run.status != "succeeded":
            raise CommandError(f"Judging failed: {run.error}")
        self.stdout.write(f"  {run.done} of {run.total} responses judged ({time.monotonic() - t0:.0f} s).")
        return judge

    @contextlib.contextmanager
    def _progress_bar(self, total: int, desc: str = "generate"):
        from celery.signals import task_postrun
        from tqdm import tqdm

        bar = tqdm(total=total, unit="resp", desc=desc, file=sys.stderr, disable=not total)

        def advance(sender, done, **kwargs):
            bar.update(done - bar.n)

        def judged(sender=None, args=(), **kwargs):  # a judge run sends no progress: the bar moves by chunks
            if getattr(sender, "name", "") == dispatch.JUDGE_CHUNK:
                bar.update(JudgeRun.objects.get(chunks=args[0]).done - bar.n)

        generation_progress.connect(advance, weak=False, dispatch_uid="demo-progress")
        task_postrun.connect(judged, weak=False, dispatch_uid="demo-judge-progress")
        try:
            yield
        finally:
            generation_progress.disconnect(dispatch_uid="demo-progress")
            task_postrun.disconnect(dispatch_uid="demo-judge-progress")
            bar.close()

    def _rating(self, study, users) -> None:
        version = study.consent_versions.order_by("-version").first()
        if version is None:
            version = rater_services.consent_publish(study=study, text=CONSENT_TEXT, withdrawal_policy="exclude")
        if not study.calibration_items.exists():
            prompt = study.prompts.order_by("id").first()
            strong = prompt.reference or best_counselchat_answer(())
            CalibrationItem.objects.create(
                study=study, messages=prompt.messages, response_text=strong, references=_references(study, 0.85),
                rationale="A counsellor's answer: acknowledges the feelings, then offers concrete, gentle next steps.",
                created_by=study.owner, use_as_gold=False,
            )
            CalibrationItem.objects.create(
                study=study, messages=prompt.messages, response_text=DISMISSIVE,
                references=_references(study, 0.2),
                rationale="Fluent but dismissive: tells the person how to feel and ignores what they said.",
                created_by=study.owner, use_as_gold=True,
            )
        for username, role in ACCOUNTS:
            if role == Role.RATER:
                Consent.objects.get_or_create(study=study, user=users[username], version=version)
                # The demo's raters skip calibration: the researcher approved them (a real study would not).
                StudyMembership.objects.filter(study=study, user=users[username], role=Role.RATER).update(
                    calibration_decision="approved")
        if study.status != Study.Status.RATING:
            rater_services.study_open_for_rating(study=study)
        else:
            rater_services.design_rebalance(study=study)  # an open pairwise phase's queues too
        self._pairwise(study)

    def _pairwise(self, study) -> None:
        """The second phase on the same responses: the issue's two default questions, a gold pair, open."""
        phase = PairwisePhase.objects.filter(study=study).first()
        if phase is None:
            prompt = study.prompts.order_by("id").first()
            rater_services.gold_pair_add(
                study=study, user=study.owner, messages=prompt.messages,
                better_text=prompt.reference or best_counselchat_answer(()), worse_text=DISMISSIVE,
                rationale="The better one takes up what the person said; the other tells them how to feel.")
            phase = rater_services.pair_phase_save(study=study, criteria=[dict(c) for c in DEFAULT_CRITERIA],
                                                   judgments_per_pair=3, gold_rate=0.1, reason="optional")
        if phase.status == PairwisePhase.Status.DRAFT:
            rater_services.pair_phase_open(study=study)

    def _simulate(self, study) -> None:
        """SIMULATED raters: each has a severity, each prompt a difficulty, the fine-tuned arm +0.7 points
        (on a 1-10 scale, in proportion on others) on the rubric's first criterion."""
        rng = np.random.default_rng(DEMO_SEED)
        pending = Assignment.objects.filter(study=study, completed_at__isnull=True, response__isnull=False).select_related(
            "response__arm", "response__prompt")
        criteria = list(study.criteria.all())
        severity = {}
        difficulty = {}
        rows, answers = [], []
        for a in pending:
            s = severity.setdefault(a.rater_id, rng.normal(0, 0.8))
            d = difficulty.setdefault(a.response.prompt_id, rng.normal(0, 1.0))
            boost = 0.7 if a.response.arm.adapter else 0.0
            unsafe = bool(rng.random() < 0.02)
            rows.append(Rating(response=a.response, rater_id=a.rater_id, unsafe=unsafe,
                               unsafe_category="other" if unsafe else "", simulated=True,
                               seconds_on_item=float(rng.gamma(4, 8)), comment="SIMULATED"))
            scores = []
            for i, c in enumerate(criteria):
                latent = (6 + (boost if i == 0 else 0) + s + d + rng.normal(0, 1.2)) / 10  # about 0..1
                if c.not_sure and rng.random() < 0.05:
                    scores.append((c, None))
                elif c.kind == "choice":
                    scores.append((c, int(rng.integers(c.min_value, c.max_value + 1))))
                else:
                    span = c.max_value - c.min_value
                    scores.append((c, int(np.clip(round(c.min_value + latent * span), c.min_value, c.max_value))))
            answers.append(scores)
        with transaction.atomic():
            Rating.objects.bulk_create(rows)
            Score.objects.bulk_create(
                Score(rating=rating, criterion=c, value=value, not_sure=value is None, min_value=c.min_value,
                      max_value=c.max_value, rationale="SIMULATED" if c.rationale == "required" else "")
                for rating, scores in zip(rows, answers, strict=True) for c, value in scores)
            pending.update(completed_at=timezone.now())
        self.stdout.write(self.style.WARNING(f"Added {len(rows)} SIMULATED ratings (labelled as such everywhere)."))
        self._simulate_pairs(study, rng)

    def _simulate_pairs(self, study, rng) -> None:
        """SIMULATED pairwise judgments (gold pairs left to people, as gold items are): on the first question
        the fine-tuned arm's response is ahead by the same 0.7 points, with noise; "about the same" within
        half a point."""
        phase = PairwisePhase.objects.filter(study=study, status=PairwisePhase.Status.OPEN).first()
        if phase is None:
            return
        pending = PairAssignment.objects.filter(study=study, completed_at__isnull=True,
                                                pair__isnull=False).select_related("pair__first__arm")
        judgments, verdicts = [], []
        for a in pending:
            judgments.append(PairJudgment(pair=a.pair, rater_id=a.rater_id, first_on_left=a.first_on_left,
                                          reason="SIMULATED", seconds_on_item=float(rng.gamma(4, 10)), simulated=True))
            tuned_first = bool(a.pair.first.arm.adapter)
            row = {}
            for i, key in enumerate(phase.keys()):
                margin = (0.7 if i == 0 else 0.0) + rng.normal(0, 1.2)  # fine-tuned minus baseline, in points
                row[key] = TIE if abs(margin) < 0.5 else FIRST if (margin > 0) == tuned_first else SECOND
            verdicts.append(row)
        with transaction.atomic():
            PairJudgment.objects.bulk_create(judgments)
            PairVerdict.objects.bulk_create(PairVerdict(judgment=judgment, key=key, verdict=verdict)
                                            for judgment, row in zip(judgments, verdicts, strict=True)
                                            for key, verdict in row.items())
            pending.update(completed_at=timezone.now())
        self.stdout.write(self.style.WARNING(f"Added {len(judgments)} SIMULATED pairwise judgments "
                                             "(labelled as such)."))


# The calibration replies' references on criteria whose high end is the bad end.
_REVERSED = {"toxicity"}


def _references(study, quality: float) -> dict:
    """Demo reference answers for a reply of this quality (0 = worst, 1 = best) on any rubric: a likert
    point that far along the scale; for a choice, its last option (for CounselBench's medical advice
    that is "no", right for both demo replies: neither gives medical advice)."""
    references = {}
    for c in study.rubric():
        if c["kind"] == "choice":
            references[c["key"]] = c["max"]
        else:
            q = 1 - quality if c["key"] in _REVERSED else quality
            references[c["key"]] = c["min"] + round(q * (c["max"] - c["min"]))
    return references
