"""The training stages (keypoint, detection, PRN): what each trains and how it is evaluated."""
