from django.apps import AppConfig


class CacheConfig(AppConfig):
    name = "cache"
    verbose_name = "Response cache"
