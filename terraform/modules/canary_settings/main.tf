# The fleet file's optional per-agent `canary` key, read the way the fleet module needs it: which agents
# get a red-team canary job, on which schedule, with which ceiling on attack success. Pure expressions (no
# provider, no resource), so the test suite applies this module with a real Terraform on sample fleet
# files (tests/infra/test_canary_settings.py). Every other key of an agent (module, guards, ...) is the
# runtime's or another module's business and is ignored here.
#
#   canary: {enabled: true, schedule: "0 6 * * *", max_attack_success: 0}
#
# An agent without the key, with `canary:` empty, or with enabled false (the default) gets no canary.
# HCL's && and || do not short-circuit, so every test below reads the settings with lookup and coalesce
# rather than guarding an attribute access with another condition.

locals {
  known_keys = ["enabled", "schedule", "max_attack_success"]

  # Cloud Run job names are at most 63 characters, and agex-redteam-canary- takes 20.
  job_prefix      = "agex-redteam-canary-"
  max_name_length = 63 - length(local.job_prefix)

  # name => the agent's canary key, for the agents that have a non-empty one
  declared = { for name, agent in var.agents : name => agent.canary if try(agent.canary, null) != null }

  # name => its settings with the defaults filled in (null where a setting has the wrong type)
  settings = {
    for name, c in local.declared : name => {
      mapping            = can(keys(c))
      unknown            = [for k in try(keys(c), []) : k if !contains(local.known_keys, k)]
      enabled            = try(jsonencode(lookup(c, "enabled", false)), "?")
      schedule           = try(tostring(coalesce(lookup(c, "schedule", null), var.default_schedule)), null)
      max_attack_success = try(tonumber(coalesce(lookup(c, "max_attack_success", null), var.default_max_attack_success)), null)
    }
  }

  problems = concat(
    [for name, s in local.settings : "agents.${name}.canary must be a mapping (${join(", ", local.known_keys)})" if !s.mapping],
    flatten([for name, s in local.settings : [
      for k in s.unknown : "agents.${name}.canary.${k} is not a canary setting (${join(", ", local.known_keys)})"
    ]]),
    [for name, s in local.settings : "agents.${name}.canary.enabled must be true or false"
    if s.mapping && !contains(["true", "false"], s.enabled)],
    [for name, s in local.settings : "agents.${name}.canary.schedule must be a cron expression of five fields, like \"0 6 * * *\""
    if s.mapping && !can(regex("^\\S+(\\s+\\S+){4}$", s.schedule))],
    [for name, s in local.settings : "agents.${name}.canary.max_attack_success must be a number from 0 to 1 (the share of attack cases that may succeed)"
    if s.mapping && !try(s.max_attack_success >= 0 && s.max_attack_success <= 1, false)],
    [for name, s in local.settings : "agents.${name}: its canary job would be named ${local.job_prefix}${name}, over Cloud Run's 63 characters: give the agent a name of at most ${local.max_name_length}"
    if s.enabled == "true" && length(name) > local.max_name_length],
  )

  enabled = {
    for name, s in local.settings : name => {
      job                = "${local.job_prefix}${name}"
      schedule           = s.schedule
      max_attack_success = s.max_attack_success
    } if s.enabled == "true"
  }
}
