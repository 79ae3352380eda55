import factory
from django.contrib.auth import get_user_model

from evalapp.models import Arm, Prompt, Rating, Response, Study
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

    title = factory.Sequence(lambda n: f"Study {n}")
    owner = factory.SubFactory(UserFactory)


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
    empathy = 7
    fluency = 8
