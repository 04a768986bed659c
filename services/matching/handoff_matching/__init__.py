"""The matching service: who is on call, who fits, and the escalation ladder.

domain/   pure rules with an explicit `now`: on-call schedules, eligibility, ranking
          (adapters, entrypoints and the offer state machine follow with issue 4)
"""
