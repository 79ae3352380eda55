from django.apps import AppConfig


class ModelserverConfig(AppConfig):
    name = "modelserver"
    verbose_name = "Model server"
