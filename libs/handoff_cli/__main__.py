from handoff_cli.main import app

app(prog_name="handoff")
