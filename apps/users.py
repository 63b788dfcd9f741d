"""A table-table join: users as the join of their profile and their settings, each kept as
a table from its topic; every change of a user goes on to a topic.

Run it:  streamer worker apps.users
Feed it: streamer send demo-profiles --app apps.users --key u1 --value '{"name": "Ann"}'
         streamer send demo-settings --app apps.users --key u1 --value '{"theme": "dark"}'
Read it: demo-user-changes gets {"name": "Ann", "theme": "dark"} under u1; a tombstone when
the profile or the settings of u1 are deleted. `streamer tables apps.users get
demo-users u1` prints the row.
"""

from __future__ import annotations

import os

import streamer

PREFIX = os.environ.get("STREAMER_DEMO_PREFIX", "demo")

app = streamer.App(f"{PREFIX}-users", commit_interval=0.5)
profiles = app.topic(f"{PREFIX}-profiles", key_type=str, value_type=dict, partitions=4)
settings = app.topic(f"{PREFIX}-settings", key_type=str, value_type=dict, partitions=4)
user_changes = app.topic(f"{PREFIX}-user-changes", key_type=str, value_type=dict, partitions=4)

users = app.table_join(
    profiles,
    settings,
    name=f"{PREFIX}-users",
    joiner=lambda profile, setting: {**profile, **setting},
    sink=user_changes,
)
