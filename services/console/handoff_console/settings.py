from pydantic import SecretStr

from handoff_platform.settings import PlatformSettings


class ConsoleSettings(PlatformSettings):
    """The console's environment. The admin tokens are the services' own variables, so one
    environment serves all five processes in a demo; in production each is a Secret."""

    console_referral_url: str = "http://127.0.0.1:8001"
    console_matching_url: str = "http://127.0.0.1:8002"
    console_notify_url: str = "http://127.0.0.1:8003"
    console_reports_url: str = "http://127.0.0.1:8006"
    referral_admin_token: SecretStr | None = None
    matching_admin_token: SecretStr | None = None
    notify_admin_token: SecretStr | None = None
    reports_admin_token: SecretStr | None = None
    # Secure cookies need HTTPS; only a demo on 127.0.0.1 over plain HTTP turns this off.
    console_secure_cookies: bool = True
    console_session_hours: float = 12.0  # absolute lifetime of a session
    console_idle_minutes: float = 60.0  # a session unused this long ends
    console_board_refresh_seconds: int = 15
    # Where calendar apps reach the matching service's feeds (its public address); by
    # default the address the console itself calls.
    console_calendar_base_url: str | None = None
