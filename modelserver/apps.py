from django.apps import AppConfig


class ModelserverConfig(AppConfig):
    name = "modelserver"
    verbose_name = "Model server"

    def ready(self):
        # Registers the tasks by name, so modelserver.dispatch finds them in a web process too.
        from . import tasks  # noqa: F401
