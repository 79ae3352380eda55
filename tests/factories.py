import factory
from django.contrib.auth import get_user_model

from evalapp.models import Arm, Criterion, Prompt, Rating, Response, Score, Study
from evalapp.rubric import validate
from evalapp.rubric_presets import DEFAULT_PRESET, preset as get_preset
from raters.models import Role, StudyMembership


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study
        skip_postgeneration_save = True

    title = factory.Sequence(lambda n: f"Study {n}")
    owner = factory.SubFactory(UserFactory)

    @factory.post_generation
    def rubric(self, create, extracted, preset=DEFAULT_PRESET, **kwargs):
        """A rubric as every real study has one: StudyFactory(rubric=[...]) or (rubric__preset="epitome")."""
        if not create:
            return
        criteria = validate(extracted) if extracted is not None else get_preset(preset)["criteria"]
        if extracted is None:
            Study.objects.filter(pk=self.pk).update(rubric_preset=preset)
            self.rubric_preset = preset
        Criterion.objects.bulk_create(Criterion.from_spec(self, i, spec) for i, spec in enumerate(criteria))


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StudyMembership

    study = factory.SubFactory(StudyFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.RATER
    pseudonym = factory.Sequence(lambda n: f"R{n:03d}")


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    study = factory.SubFactory(StudyFactory)
    external_id = factory.Sequence(lambda n: f"q{n}")
    messages = factory.LazyAttribute(lambda o: [{"role": "user", "content": f"I feel anxious about {o.external_id}."}])
    topic = "anxiety"
    source = "test"
    split = "test"


class ArmFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Arm

    study = factory.SubFactory(StudyFactory)
    label = factory.Iterator(["fine-tuned", "baseline"])


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    arm = factory.SubFactory(ArmFactory, study=factory.SelfAttribute("..prompt.study"))
    sample_index = 0
    text = "That sounds hard. What has helped you before?"
    provenance = factory.LazyFunction(lambda: {"seed": 1})


class RatingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rating

    response = factory.SubFactory(ResponseFactory)
    rater = factory.SubFactory(UserFactory)

    @classmethod
    def _create(cls, model_class, *args, empathy=None, fluency=None, scores=None, **kwargs):
        """RatingFactory(empathy=.., fluency=..) for the default rubric, or scores={key: value or None}
        (None = not sure) for any rubric; criteria not named get 7 and 8 where they fit (the default
        rubric's empathy and fluency), else their scale's midpoint."""
        rating = super()._create(model_class, *args, **kwargs)
        given = {k: v for k, v in (("empathy", empathy), ("fluency", fluency)) if v is not None}
        given.update(scores or {})
        defaults = {"empathy": 7, "fluency": 8}
        rows = []
        for c in rating.response.prompt.study.criteria.all():
            fallback = defaults.get(c.key)
            if fallback is None or not c.min_value <= fallback <= c.max_value:
                fallback = (c.min_value + c.max_value) // 2
            value = given.get(c.key, fallback)
            rows.append(Score(rating=rating, criterion=c, value=value, not_sure=value is None,
                              min_value=c.min_value, max_value=c.max_value))
        Score.objects.bulk_create(rows)
        return rating


def score_of(rating: Rating, key: str):
    """A rating's stored answer to one criterion (None = not sure)."""
    return rating.scores.get(criterion__key=key).value


def log_in(client, username: str, password: str) -> bool:
    """Log in through the login form, as a person does: Client.login() calls authenticate() without the
    request, which the login throttling (django-axes) needs to know who is trying."""
    from django.urls import reverse

    response = client.post(reverse("login"), {"username": username, "password": password})
    return response.status_code == 302
