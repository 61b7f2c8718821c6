# Study B (placeholder until the Study B rules land).
def study_b_targets():
    return []
