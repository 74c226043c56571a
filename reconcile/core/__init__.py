"""The pure core: values, notes, the planner, the safety check and the renderers. No IO, no clock read: `now`
is passed in.
"""
