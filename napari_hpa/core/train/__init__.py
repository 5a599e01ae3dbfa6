"""Training: data sets, augmentation, the run set-up, schedules, the loop, reports, search."""
